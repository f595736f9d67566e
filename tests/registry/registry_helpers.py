"""Helpers for the registry suite: build textkit variants, run the real CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import Result

from mcphost.host import Home
from mcphost.host.examples import copy_example
from mcphost.security import PrivateKey, TrustStore

REPO = Path(__file__).resolve().parents[2]
TEXTKIT = REPO / "example_plugins" / "textkit"
MCPHOST = str(Path(sys.executable).with_name("mcphost"))

#: The ``cli`` fixture: runs ``mcphost --home HOME ARGS...`` in-process.
CliFn = Callable[..., Result]


def _pip(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pip {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")


def build(project: Path, out: Path) -> Path:
    """A real wheel of ``project`` built by ``pip wheel`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("*.whl"))
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(project))
    (new,) = set(out.glob("*.whl")) - before
    return new


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


def run_cli(
    home: Home,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    launcher: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``mcphost`` executable in a subprocess (or ``launcher``, a command
    that runs the CLI with the arguments that follow it)."""
    return subprocess.run(
        [*(launcher or [MCPHOST]), "--home", str(home.root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def cli_json(home: Home, *args: str) -> Any:
    proc = run_cli(home, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
