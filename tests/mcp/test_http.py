"""``mcphost serve`` over streamable HTTP with the official client, both spec eras."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import psutil
import pytest
from http_helpers import http_client, serve_http_process
from mcp.shared.exceptions import MCPError
from support.procs import assert_process_gone

from mcphost.host import discover_directory


def inflight(host: Any, plugin: str) -> int:
    return sum(s.get("inflight") or 0 for s in host.stats() if s["plugin"] == plugin)


@pytest.mark.parametrize(("mode", "version"), [("auto", "2026-07-28"), ("legacy", "2025-11-25")])
async def test_official_client_lists_calls_and_gets_errors_and_progress_over_http(
    mcp_home: Path, plugin_dirs: dict[str, Path], embedded: Any, mode: str, version: str
) -> None:
    dirs = [plugin_dirs["textkit"], plugin_dirs["mathkit"]]
    async with embedded(mcp_home, dirs) as served:
        seen: list[float] = []

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            seen.append(p)

        async with served.client(mode=mode) as client:
            assert client.protocol_version == version
            names = {t.name for t in (await client.list_tools()).tools}
            assert "textkit.upper" in names and "mathkit.stats" in names
            res = await client.call_tool("textkit.upper", {"text": "web"})
            assert res.structured_content == {"result": "WEB"}
            failed = await client.call_tool("mathkit.stats", {"values": []})
            assert failed.is_error
            with pytest.raises(MCPError) as err:
                await client.call_tool("nosuch.tool", {})
            assert err.value.error.code == -32602
            streamed = await client.call_tool(
                "textkit.count_to", {"n": 3}, progress_callback=on_progress
            )
            assert streamed.structured_content == {"result": [0, 1, 2]}
            assert seen == [1, 2, 3]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_cancelling_a_long_call_over_http_cancels_it_in_the_worker(
    mcp_home: Path, chatty_dir: Path, embedded: Any, mode: str
) -> None:
    data = mcp_home / "data" / "textkit"

    async with (
        embedded(mcp_home, [chatty_dir]) as served,
        served.client(mode=mode) as client,
    ):
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "textkit.watched_sleep", {"seconds": 60})
            with anyio.fail_after(20):  # the call runs in the worker
                while not (data / "started-sleep").exists():
                    await anyio.sleep(0.01)
            assert inflight(served.host, "textkit") == 1
            tg.cancel_scope.cancel()
        with anyio.fail_after(20):
            # The host forgets the call, and the tool itself is cancelled in the worker.
            while inflight(served.host, "textkit") != 0 or not (data / "cancelled-sleep").exists():
                await anyio.sleep(0.01)
        res = await client.call_tool("textkit.upper", {"text": "next"})
        assert res.structured_content == {"result": "NEXT"}


async def test_2026_listener_sees_tools_list_changed_when_a_plugin_is_added(
    mcp_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    async with (
        embedded(mcp_home, [plugin_dirs["textkit"]]) as served,
        served.client() as client,
    ):
        before = {t.name for t in (await client.list_tools()).tools}
        assert "notes.save" not in before
        async with client.listen(tools_list_changed=True) as sub:
            await served.host.activate(discover_directory(plugin_dirs["notes"])[0])
            with anyio.fail_after(10):
                event = await sub.__anext__()
            assert type(event).__name__ == "ToolsListChanged"
        after = {t.name for t in (await client.list_tools()).tools}
        assert "notes.save" in after


async def test_handshake_session_sees_tools_list_changed_on_its_get_stream(
    mcp_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    changed = anyio.Event()

    async def on_message(msg: Any) -> None:
        if isinstance(msg, types.ToolListChangedNotification):
            changed.set()

    async with (
        embedded(mcp_home, [plugin_dirs["textkit"]]) as served,
        served.client(mode="legacy", message_handler=on_message) as client,
    ):
        await client.list_tools()
        with anyio.fail_after(10):
            while not any(served.front.streams):  # the client's GET stream is open
                await anyio.sleep(0.01)
        await served.host.activate(discover_directory(plugin_dirs["notes"])[0])
        with anyio.fail_after(10):
            await changed.wait()
        names = {t.name for t in (await client.list_tools()).tools}
        assert "notes.save" in names


async def test_large_tool_sets_are_paged_with_cursors(
    mcp_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    dirs = [plugin_dirs["textkit"], plugin_dirs["mathkit"], plugin_dirs["notes"]]
    async with (
        embedded(mcp_home, dirs, page_size=4) as served,
        served.client() as client,
    ):
        pages, names, cursor = 0, [], None
        while True:
            page = await client.list_tools(cursor=cursor)
            pages += 1
            assert len(page.tools) <= 4
            names += [t.name for t in page.tools]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert names == sorted(t.name for t in served.host.tools())
        assert pages == -(-len(names) // 4)


def raw(
    port: int, token: str | None, method: str, body: bytes | None = None, **headers: str
) -> tuple[int, bytes]:
    """One request with the usual headers (and ``token``), replaced or added by ``headers``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    hdrs = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    hdrs.update({k.replace("_", "-"): v for k, v in headers.items()})
    conn.request(method, "/mcp", body=body, headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def oversized(port: int, token: str) -> bytes:
    """Announce a body over the 4 MiB default limit; the server refuses before reading it."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(
            b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Accept: application/json, text/event-stream\r\nAuthorization: Bearer "
            + token.encode()
            + b"\r\nContent-Length: 5242880\r\n\r\n{"
        )
        return sock.recv(4096)


async def test_bad_http_requests_are_refused_with_the_right_status_and_the_server_stays_up(
    mcp_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    async with embedded(mcp_home, [plugin_dirs["textkit"]]) as served:
        port, token = served.front.port, served.token
        modern = {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        }
        ping = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()

        def checks() -> None:
            status, body = raw(port, token, "POST", b"{broken")
            assert status == 400 and json.loads(body)["error"]["code"] == -32700
            assert raw(port, token, "POST", b'{"a": 1}')[0] == 400
            assert raw(port, token, "POST", ping)[0] == 400  # no session, no envelope
            assert raw(port, token, "POST", ping, Mcp_Session_Id="nope")[0] == 404
            assert raw(port, token, "POST", ping, Content_Type="text/plain")[0] == 415
            assert raw(port, token, "POST", ping, Origin="http://evil.example")[0] == 403
            assert raw(port, token, "POST", ping, Host="evil.example")[0] == 421
            assert oversized(port, token).startswith(b"HTTP/1.1 413")
            assert raw(port, token, "GET")[0] == 405
            assert raw(port, token, "PUT", ping)[0] == 405
            unknown = json.dumps(
                {"jsonrpc": "2.0", "id": 2, "method": "nope/nope", "params": {"_meta": modern}}
            ).encode()
            status, body = raw(port, token, "POST", unknown, MCP_Protocol_Version="2026-07-28")
            assert status == 404 and json.loads(body)["error"]["code"] == -32601
            status, body = raw(port, token, "POST", unknown, MCP_Protocol_Version="2025-06-18")
            assert status == 400 and json.loads(body)["error"]["code"] == -32020
            # A browser page on localhost may call it.
            status, body = raw(
                port,
                token,
                "POST",
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": 3,
                        "method": "tools/call",
                        "params": {
                            "name": "textkit.upper",
                            "arguments": {"text": "ok"},
                            "_meta": modern,
                        },
                    }
                ).encode(),
                MCP_Protocol_Version="2026-07-28",
                Origin="http://localhost:3000",
            )
            assert status == 200, body
            assert json.loads(body)["result"]["structuredContent"] == {"result": "OK"}
            # A client that drops its connection mid-request costs nothing.
            sock = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            sock.putrequest("POST", "/mcp")
            sock.putheader("Content-Type", "application/json")
            sock.putheader("Content-Length", "100")
            sock.endheaders(b'{"jsonrpc"')
            sock.close()

        await asyncio.to_thread(checks)
        async with served.client() as client:
            res = await client.call_tool("textkit.upper", {"text": "fine"})
            assert res.structured_content == {"result": "FINE"}


def test_mcphost_serve_http_subprocess_serves_the_official_client(
    serve_argv: list[str], mcp_home: Path
) -> None:
    with serve_http_process(serve_argv, mcp_home) as served:

        async def go() -> None:
            async with http_client(served.url, served.token) as client:
                res = await client.call_tool("mathkit.is_prime", {"n": 97})
                assert res.structured_content == {"result": True}

        asyncio.run(go())
        workers = psutil.Process(served.proc.pid).children(recursive=True)
        assert workers, "the plugin ran in a worker process"
        served.proc.terminate()  # SIGTERM: a clean stop, workers included
        assert served.proc.wait(timeout=20) == 0
        for worker in workers:
            assert_process_gone(worker, 20, reap=True)


def test_http_refuses_a_non_loopback_bind_without_allow_remote(serve_argv: list[str]) -> None:
    out = subprocess.run(
        [*serve_argv, "--http", "0.0.0.0:0"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0
    assert "--allow-remote" in out.stderr
