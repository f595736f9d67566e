"""GET on the MCP endpoint, as a client sees it in each era: the handshake era's session
stream (one per session, for that session's token, text/event-stream only), and no
standing stream at all without a session (the 2026-07-28 protocol)."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from pathlib import Path
from typing import Any

from mcphost.host.home import Home
from mcphost.security.tokens import create_token

INIT = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}},
    }
).encode()
SSE = "text/event-stream"


def connect(port: int) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=20)


def headers_for(token: str, accept: str | None, sid: str | None) -> dict[str, str]:
    out = {"Authorization": f"Bearer {token}"}
    if accept is not None:
        out["Accept"] = accept
    if sid is not None:
        out["Mcp-Session-Id"] = sid
    return out


def get(
    port: int, token: str, sid: str | None = None, accept: str | None = SSE
) -> tuple[int, dict[str, str], str]:
    """A GET answered at once (a refusal): status, headers, body."""
    conn = connect(port)
    try:
        conn.request("GET", "/mcp", headers=headers_for(token, accept, sid))
        resp = conn.getresponse()
        body = resp.read().decode()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def open_stream(port: int, token: str, sid: str) -> tuple[http.client.HTTPConnection, int, str]:
    """A GET left open: the connection, its status and content type (body unread)."""
    conn = connect(port)
    conn.request("GET", "/mcp", headers=headers_for(token, SSE, sid))
    resp = conn.getresponse()
    return conn, resp.status, resp.getheader("content-type") or ""


def initialize(port: int, token: str) -> str:
    conn = connect(port)
    try:
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": f"application/json, {SSE}",
        }
        conn.request("POST", "/mcp", body=INIT, headers=headers)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        sid = resp.getheader("mcp-session-id")
        assert sid
        return sid
    finally:
        conn.close()


def test_get_without_a_session_is_405_pointing_to_subscriptions_listen(
    mcp_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    async def go() -> tuple[int, dict[str, str], str]:
        async with embedded(mcp_home, [plugin_dirs["textkit"]]) as served:
            return await asyncio.to_thread(get, served.front.port, served.token)

    status, headers, body = asyncio.run(go())
    assert status == 405
    assert headers["allow"] == "POST"
    assert "2026-07-28 protocol uses subscriptions/listen" in body


def test_get_naming_an_unknown_session_or_another_tokens_session_is_404(
    mcp_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    async def go() -> list[tuple[int, dict[str, str], str]]:
        async with embedded(mcp_home, [plugin_dirs["textkit"]]) as served:
            port, token = served.front.port, served.token
            other, _ = create_token(Home(mcp_home).tokens_file, "other")

            def checks() -> list[tuple[int, dict[str, str], str]]:
                sid = initialize(port, token)
                return [get(port, token, "no-such-session"), get(port, other, sid)]

            return await asyncio.to_thread(checks)

    for status, _, body in asyncio.run(go()):
        assert status == 404
        assert body.startswith("no such session; it ended or expired: initialize again")


def test_get_on_a_session_must_accept_an_event_stream_or_gets_406(
    mcp_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    async def go() -> list[tuple[int, dict[str, str], str]]:
        async with embedded(mcp_home, [plugin_dirs["textkit"]]) as served:
            port, token = served.front.port, served.token

            def checks() -> list[tuple[int, dict[str, str], str]]:
                sid = initialize(port, token)
                return [get(port, token, sid, "application/json"), get(port, token, sid, None)]

            return await asyncio.to_thread(checks)

    (json_only, _, why_json), (missing, _, why_missing) = asyncio.run(go())
    assert json_only == 406
    assert "Accept 'application/json' does not allow the answer" in why_json
    assert "accept text/event-stream" in why_json
    assert missing == 406
    assert why_missing.startswith("missing Accept header: accept text/event-stream")


def test_a_session_has_one_get_stream_a_second_is_409_until_the_first_closes(
    mcp_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    async def go() -> dict[str, Any]:
        async with embedded(mcp_home, [plugin_dirs["textkit"]]) as served:
            port, token = served.front.port, served.token

            def checks() -> dict[str, Any]:
                sid = initialize(port, token)
                first, status, kind = open_stream(port, token, sid)
                second = get(port, token, sid)
                first.close()
                # The server notices the closed stream on its own time: ask again, with
                # a bound, until the session's slot is free.
                deadline = time.monotonic() + 20
                while True:
                    conn, again, _ = open_stream(port, token, sid)
                    conn.close()
                    if again != 409 or time.monotonic() > deadline:
                        break
                return {"first": (status, kind), "second": second, "again": again}

            return await asyncio.to_thread(checks)

    seen = asyncio.run(go())
    assert seen["first"] == (200, SSE)
    status, _, body = seen["second"]
    assert status == 409
    assert body.startswith("this session already has a GET stream")
    assert seen["again"] == 200
