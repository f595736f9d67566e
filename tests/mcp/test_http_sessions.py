"""Handshake-era HTTP sessions expire when idle (the client gets 404 and initialises
again) and are capped in number (a clear 503 when full)."""

from __future__ import annotations

import asyncio
import http.client
import json
from pathlib import Path
from typing import Any

from support.waiting import wait_until

INIT = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}},
    }
).encode()
PING = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping"}).encode()


def request(
    port: int, token: str, method: str, body: bytes | None = None, sid: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "Authorization": f"Bearer {token}",
    }
    if sid is not None:
        headers["Mcp-Session-Id"] = sid
    conn.request(method, "/mcp", body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


async def test_an_idle_session_expires_and_its_id_then_gets_404(
    mcp_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    async with embedded(mcp_home, [plugin_dirs["textkit"]], session_idle_seconds=0.5) as served:
        port, token = served.front.port, served.token
        status, headers, _ = await asyncio.to_thread(request, port, token, "POST", INIT)
        assert status == 200
        sid = headers["mcp-session-id"]
        status, _, _ = await asyncio.to_thread(request, port, token, "POST", PING, sid)
        assert status == 200
        assert len(served.front.sessions) == 1
        await wait_until(lambda: len(served.front.sessions) == 0, 10, "the idle session expired")
        assert len(served.front.sessions) == 0
        for method, body in (("POST", PING), ("GET", None), ("DELETE", None)):
            status, _, _ = await asyncio.to_thread(request, port, token, method, body, sid)
            assert status == 404, method
        status, headers, _ = await asyncio.to_thread(request, port, token, "POST", INIT)
        assert status == 200 and headers["mcp-session-id"] != sid


async def test_initialize_over_the_session_cap_is_refused_clearly_until_one_ends(
    mcp_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    async with embedded(mcp_home, [plugin_dirs["textkit"]], max_sessions=2) as served:
        port, token = served.front.port, served.token

        def checks() -> None:
            sids = [request(port, token, "POST", INIT)[1]["mcp-session-id"] for _ in "ab"]
            status, headers, body = request(port, token, "POST", INIT)
            assert status == 503 and headers["retry-after"]
            error = json.loads(body)["error"]
            assert "limit of 2 sessions" in error["message"]
            assert request(port, token, "DELETE", None, sids[0])[0] == 200
            assert request(port, token, "POST", INIT)[0] == 200
            assert request(port, token, "POST", PING, sids[1])[0] == 200

        await asyncio.to_thread(checks)
