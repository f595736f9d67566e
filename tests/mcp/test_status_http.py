"""``mcphost status`` of a real ``mcphost serve --http``: its transport, and the calls
its HTTP clients made, per plugin, with the versions installed."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from http_helpers import http_client, serve_http_process
from support.cli import mcphost_command


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*mcphost_command(), "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_status_of_serve_http_shows_its_transport_and_each_plugins_calls(
    serve_argv: list[str],
    mcp_home: Path,
    plugin_dirs: dict[str, Path],
    no_leftover_workers: None,
) -> None:
    with serve_http_process(serve_argv, mcp_home) as served:

        async def go() -> None:
            async with http_client(served.url, served.token) as client:
                for word in ("a", "b", "c"):
                    res = await client.call_tool("textkit.upper", {"text": word})
                    assert res.structured_content == {"result": word.upper()}
                res = await client.call_tool("mathkit.is_prime", {"n": 97})
                assert res.structured_content == {"result": True}

        asyncio.run(go())
        done = cli(mcp_home, "status", "--json")
        assert done.returncode == 0, done.stderr
        (host,) = json.loads(done.stdout)["hosts"]
        text = cli(mcp_home, "status")

    assert host["pid"] == served.proc.pid
    assert host["frontend"]["transport"] == "http"
    assert "--http" in host["argv"]
    plugins = {p["plugin"]: p for p in host["plugins"]}
    assert {name: p["calls"] for name, p in plugins.items()} == {"textkit": 3, "mathkit": 1}
    # The versions installed in the plugin directories serve was given.
    versions = {
        name: next(plugin_dirs[name].glob(f"mcphost_{name}-*.dist-info")).stem.split("-")[1]
        for name in ("textkit", "mathkit")
    }
    assert {name: p["version"] for name, p in plugins.items()} == versions
    assert all(p["state"] == "running" and p["errors"] == {} for p in plugins.values())
    assert text.returncode == 0 and f"host pid {served.proc.pid}" in text.stdout
    assert "  http  clients " in text.stdout
