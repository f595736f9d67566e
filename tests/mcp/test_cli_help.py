"""``mcphost serve --help`` shows the client configuration, the same as docs/mcp.md."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs" / "mcp.md"


def test_serve_help_shows_the_client_configuration_snippet_of_the_docs(
    mcphost_cmd: list[str],
) -> None:
    out = subprocess.run(
        [*mcphost_cmd, "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    start = out.stdout.index("{")
    end = out.stdout.rindex("}") + 1
    snippet = json.loads(out.stdout[start:end])
    assert snippet == {"mcpServers": {"mcphost": {"command": "mcphost", "args": ["serve"]}}}
    documented = re.search(r"```json\n(.*?)```", DOCS.read_text(), re.S)
    assert documented is not None
    assert json.loads(documented.group(1)) == snippet
    assert "--http" in out.stdout and "--plugin-dir" in out.stdout
