"""Helpers for the registry suite: textkit variants, a trusted key, the CLI's JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import Result
from support.cli import run_mcphost

from mcphost.host import Home
from mcphost.host.examples import copy_example
from mcphost.security import PrivateKey, TrustStore

REPO = Path(__file__).resolve().parents[2]
TEXTKIT = REPO / "example_plugins" / "textkit"

#: The ``cli`` fixture: runs ``mcphost --home HOME ARGS...`` in-process.
CliFn = Callable[..., Result]


def textkit_variant(
    dest: Path,
    version: str,
    *,
    echo_suffix: str = "",
    drop_tool: str | None = None,
    requires: list[str] | None = None,
    extra_code: str = "",
) -> Path:
    """A copy of example_plugins/textkit at ``version``: ``echo`` appends ``echo_suffix``,
    ``drop_tool`` is left out, ``requires`` become its dependencies."""
    copy_example(TEXTKIT, dest, version=version, echo_suffix=echo_suffix)
    if requires:
        pyproject = dest / "pyproject.toml"
        text = pyproject.read_text()
        assert "dependencies = []" in text, "textkit's pyproject changed; update this fixture"
        pyproject.write_text(
            text.replace("dependencies = []", f"dependencies = {json.dumps(requires)}")
        )
    code_file = dest / "mcphost_textkit" / "__init__.py"
    code = code_file.read_text()
    if drop_tool:
        code = re.sub(
            rf"@plugin\.tool\n(async )?def {drop_tool}\(.*?(?=\n\n\n|\Z)", "", code, flags=re.S
        )
        assert f"def {drop_tool}(" not in code
    code_file.write_text(code + extra_code)
    return dest


def trust_key(home: Home, key: PrivateKey) -> None:
    TrustStore(home.keys_dir).trust(key.public_key.pem(), "test publisher")


def write_config(home: Home, text: str) -> None:
    home.config_file.write_text(text)


def cli_json(home: Home, *args: str) -> Any:
    proc = run_mcphost(*args, "--json", home=home)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
