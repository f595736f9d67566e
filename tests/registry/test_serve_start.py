"""The start of ``mcphost serve``: the workers of installed plugins start while the
client's handshake goes on, not on each plugin's first call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from click.testing import Result
from support.cli import mcphost_command
from support.raw_stdio import RawStdio
from support.waiting import wait_until_sync

from mcphost.host import Home, Host, HostEvent
from mcphost.host.mcp import McpServer, ServerOptions


@pytest.fixture
def installed(home: Home, cli: Callable[..., Result], wheels: dict[str, Path]) -> Home:
    """A home whose registry has textkit 1.0 installed (its tools are recorded)."""
    result = cli("plugin", "install", str(wheels["1.0"]), "--yes")
    assert result.exit_code == 0, result.output
    return home


async def test_a_server_starting_workers_starts_an_installed_plugin_before_any_call(
    installed: Home,
) -> None:
    host = Host(installed, environment=False)
    started: asyncio.Queue[HostEvent] = asyncio.Queue()
    server = McpServer(host, ServerOptions(start_workers=True))
    try:
        server.start()
        await server.ready()
        host.add_listener(lambda e: started.put_nowait(e) if e.kind == "plugin_started" else 0)
        # The recorded tools serve tools/list without a worker; the worker starts anyway.
        assert "textkit.upper" in {t.name for t in host.tools()}
        sup = host._supervisors["textkit"]
        if sup.worker is None:
            event = await asyncio.wait_for(started.get(), 30)
            assert event.plugin == "textkit"
        assert sup.worker is not None and sup.worker.alive
    finally:
        await server.close()


async def test_a_plugin_installed_while_a_server_starts_workers_gets_its_worker_at_once(
    home: Home, cli: Callable[..., Result], wheels: dict[str, Path]
) -> None:
    host = Host(home, environment=False)
    started: asyncio.Queue[HostEvent] = asyncio.Queue()
    server = McpServer(host, ServerOptions(start_workers=True))
    try:
        server.start()
        await server.ready()
        assert host.tools() == []
        host.add_listener(lambda e: started.put_nowait(e) if e.kind == "plugin_started" else 0)
        result = await asyncio.to_thread(cli, "plugin", "install", str(wheels["1.0"]), "--yes")
        assert result.exit_code == 0, result.output
        event = await asyncio.wait_for(started.get(), 30)
        assert (event.plugin, event.version) == ("textkit", "1.0.0")
        assert host._supervisors["textkit"].worker is not None
    finally:
        await server.close()


async def test_a_server_not_asked_to_start_workers_leaves_them_to_the_first_call(
    installed: Home,
) -> None:
    host = Host(installed, environment=False)
    server = McpServer(host)
    try:
        server.start()
        await server.ready()
        assert host._supervisors["textkit"].worker is None
        assert await host.call("textkit.upper", {"text": "x"}) == "X"
    finally:
        await server.close()


def test_mcphost_serve_starts_the_worker_while_the_client_has_only_said_initialize(
    installed: Home,
) -> None:
    raw = RawStdio([*mcphost_command(), "--home", str(installed.root), "serve", "--no-environment"])
    proc = raw.proc
    assert proc.stdin is not None and proc.stdout is not None
    try:
        hello = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        }
        raw.send_json(hello)
        answer = raw.read(30)
        assert answer["result"]["serverInfo"]["name"] == "mcphost"
        # No other request is sent: the worker (python running the worker module,
        # inside its jail when bubblewrap runs here) appears on its own, within a bound.
        serve = psutil.Process(proc.pid)

        def worker_started() -> bool:
            assert proc.poll() is None
            return any(_is_worker(p) for p in serve.children(recursive=True))

        wait_until_sync(worker_started, 30, "a worker started")
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def _is_worker(p: psutil.Process) -> bool:
    try:
        return "mcphost.sandbox.worker" in " ".join(p.cmdline())
    except psutil.Error:
        return False
