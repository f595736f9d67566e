"""The start of ``mcphost serve``: the workers of installed plugins start while the
client's handshake goes on, not on each plugin's first call."""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from click.testing import Result
from registry_helpers import MCPHOST

from mcphost.host import Home, Host, HostEvent
from mcphost.host.mcp import McpServer, ServerOptions


@pytest.fixture
def installed(home: Home, cli: Callable[..., Result], wheels: dict[str, Path]) -> Home:
    """A home whose registry has textkit 1.0 installed (its tools are recorded)."""
    result = cli("plugin", "install", str(wheels["1.0"]), "--yes")
    assert result.exit_code == 0, result.output
    return home


def test_a_server_starting_workers_starts_an_installed_plugin_before_any_call(
    installed: Home,
) -> None:
    async def go() -> None:
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

    asyncio.run(go())


def test_a_plugin_installed_while_a_server_starts_workers_gets_its_worker_at_once(
    home: Home, cli: Callable[..., Result], wheels: dict[str, Path]
) -> None:
    async def go() -> None:
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

    asyncio.run(go())


def test_a_server_not_asked_to_start_workers_leaves_them_to_the_first_call(
    installed: Home,
) -> None:
    async def go() -> None:
        host = Host(installed, environment=False)
        server = McpServer(host)
        try:
            server.start()
            await server.ready()
            assert host._supervisors["textkit"].worker is None
            assert await host.call("textkit.upper", {"text": "x"}) == "X"
        finally:
            await server.close()

    asyncio.run(go())


def _read_line(fd: int, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError("mcphost serve wrote nothing in time")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise EOFError("mcphost serve closed its stdout")
        buf += chunk
    return buf


def test_mcphost_serve_starts_the_worker_while_the_client_has_only_said_initialize(
    installed: Home,
) -> None:
    proc = subprocess.Popen(
        [MCPHOST, "--home", str(installed.root), "serve", "--no-environment"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
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
        proc.stdin.write(json.dumps(hello).encode() + b"\n")
        proc.stdin.flush()
        answer = json.loads(_read_line(proc.stdout.fileno(), 30))
        assert answer["result"]["serverInfo"]["name"] == "mcphost"
        # No other request is sent: the worker (python running the worker module,
        # inside its jail when bubblewrap runs here) appears on its own, within a bound.
        serve = psutil.Process(proc.pid)
        deadline = time.monotonic() + 30
        while not any(_is_worker(p) for p in serve.children(recursive=True)):
            assert time.monotonic() < deadline, "no worker started within 30 s"
            assert proc.poll() is None
            time.sleep(0.02)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def _is_worker(p: psutil.Process) -> bool:
    try:
        return "mcphost.sandbox.worker" in " ".join(p.cmdline())
    except psutil.Error:
        return False
