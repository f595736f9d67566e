"""Clients of the ``mcp`` 1.x line (initialize handshake only) work with mcphost serve.

The 1.x client cannot share an environment with 2.x, so it runs from its own virtualenv,
``mcp1`` inside the test environment, which the README's test command makes before
pytest starts (``python3 -m venv .venv/mcp1 && .venv/mcp1/bin/pip install ...``): the
tests install nothing and need no network.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CLIENT = r"""
import json, sys
import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client


async def exercise(session):
    init = await session.initialize()
    tools = await session.list_tools()
    ok = await session.call_tool("textkit.upper", {"text": "old"})
    failed = await session.call_tool("mathkit.stats", {"values": []})
    return {
        "version": init.protocolVersion,
        "server": init.serverInfo.name,
        "tools": sorted(t.name for t in tools.tools),
        "structured": ok.structuredContent,
        "text": ok.content[0].text,
        "failed": failed.isError,
    }


async def main():
    target = json.loads(sys.argv[1])
    if isinstance(target, list):
        params = StdioServerParameters(command=target[0], args=target[1:])
        async with stdio_client(params) as (r, w), ClientSession(r, w) as s:
            print(json.dumps(await exercise(s)))
    else:
        headers = {"Authorization": "Bearer " + target["token"]}
        async with (
            streamablehttp_client(target["url"], headers=headers) as (r, w, _),
            ClientSession(r, w) as s,
        ):
            print(json.dumps(await exercise(s)))


anyio.run(main)
"""


#: The 1.x client's virtualenv, inside the environment running the tests.
MCP1_VENV = Path(sys.prefix) / "mcp1"
MCP1_SETUP = "python3 -m venv .venv/mcp1 && .venv/mcp1/bin/pip install -q 'mcp>=1.9,<2'"


@pytest.fixture(scope="session")
def mcp1_python() -> Path:
    """The Python of the ``mcp<2`` virtualenv (never skipped: a missing one fails)."""
    python = MCP1_VENV / "bin" / "python"
    check = [
        str(python),
        "-c",
        "import importlib.metadata as m; assert m.version('mcp').startswith('1.')",
    ]
    if not python.exists() or subprocess.run(check, capture_output=True).returncode != 0:
        pytest.fail(
            f"no mcp 1.x client in {MCP1_VENV}: the README's test command makes it; "
            f"alone, run: {MCP1_SETUP}"
        )
    return python


def run_client(python: Path, target: Any) -> dict[str, Any]:
    return run_client_script(python, CLIENT, target)


def run_client_script(python: Path, script: str, target: Any) -> dict[str, Any]:
    """Run ``script`` with the 1.x client's Python on ``target``; its last line's JSON."""
    out = subprocess.run(
        [str(python), "-c", script, json.dumps(target)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def check(result: dict[str, Any]) -> None:
    assert result["version"] in ("2025-06-18", "2025-11-25")
    assert result["server"] == "mcphost"
    assert "textkit.upper" in result["tools"] and "mathkit.stats" in result["tools"]
    assert result["structured"] == {"result": "OLD"}
    assert result["text"] == "OLD"
    assert result["failed"] is True


def test_mcp_1x_client_works_over_stdio(mcp1_python: Path, serve_argv: list[str]) -> None:
    check(run_client(mcp1_python, serve_argv))


def test_mcp_1x_client_works_over_http(
    mcp1_python: Path, mcp_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    async def go() -> dict[str, Any]:
        dirs = [plugin_dirs["textkit"], plugin_dirs["mathkit"]]
        async with embedded(mcp_home, dirs) as served:
            target = {"url": served.front.url, "token": served.token}
            return await asyncio.to_thread(run_client, mcp1_python, target)

    check(asyncio.run(go()))
