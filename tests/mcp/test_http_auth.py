"""Bearer tokens for ``mcphost serve --http``: made with ``mcphost tokens``, required by
default, limited to tools, revoked and expired for real; requests that smuggle or
rebind are refused."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from http_helpers import http_client, serve_http_process
from mcp.shared.exceptions import MCPError
from support.cli import run_mcphost

from mcphost.host import Host
from mcphost.host.home import Home
from mcphost.host.mcp import McpServer
from mcphost.host.mcp.http import HttpFrontEnd, HttpOptions
from mcphost.security import AuditLog
from mcphost.security.tokens import create_token, revoke_token

MODERN = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}


def modern_call(name: str, args: dict[str, Any], rid: int = 1) -> bytes:
    params = {"name": name, "arguments": args, "_meta": MODERN}
    return json.dumps(
        {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}
    ).encode()


def post(
    port: int, body: bytes, token: str | None, **extra: str
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
    }
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    for k, v in extra.items():
        name = k.replace("_", "-")
        if v == "":
            headers.pop(name, None)
        else:
            headers[name] = v
    conn.request("POST", "/mcp", body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def test_tokens_create_shows_the_token_once_and_stores_only_its_hash_0600_and_audited(
    mcp_home: Path,
) -> None:
    made = run_mcphost("tokens", "create", "ci", "--tools", "textkit.*", home=mcp_home)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("mcph_") and len(secret) > 40
    tokens_file = Home(mcp_home).tokens_file
    assert stat.S_IMODE(os.stat(tokens_file).st_mode) == 0o600
    assert secret not in tokens_file.read_text()
    listed = run_mcphost("tokens", "list", home=mcp_home)
    assert "ci" in listed.stdout and "textkit.*" in listed.stdout
    assert secret not in listed.stdout
    dated = run_mcphost("tokens", "create", "nightly", "--expires", "2d", home=mcp_home)
    assert dated.returncode == 0, dated.stderr
    (nightly,) = [
        t
        for t in json.loads(run_mcphost("tokens", "list", "--json", home=mcp_home).stdout)
        if t["name"] == "nightly"
    ]
    assert nightly["expires"] is not None and nightly["expired"] is False
    vague = run_mcphost("tokens", "create", "x", "--expires", "soon", home=mcp_home)
    assert vague.returncode == 2 and "--expires 'soon'" in vague.stderr
    assert "Traceback" not in vague.stderr
    again = run_mcphost("tokens", "create", "ci", home=mcp_home)
    assert again.returncode != 0 and "exists already" in again.stderr
    assert "Traceback" not in again.stderr
    gone = run_mcphost("tokens", "revoke", "ci", home=mcp_home)
    assert gone.returncode == 0, gone.stderr
    assert "ci" not in run_mcphost("tokens", "list", home=mcp_home).stdout
    actions = [(e["action"], e["outcome"]) for e in AuditLog(Home(mcp_home).audit_log).read()]
    assert ("token.create", "ok") in actions and ("token.revoke", "ok") in actions


async def test_http_refuses_a_request_without_a_valid_token_with_401_and_a_bearer_challenge(
    mcp_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    async with embedded(mcp_home, [plugin_dirs["textkit"]]) as served:
        port = served.front.port
        body = modern_call("textkit.upper", {"text": "x"})

        def checks() -> None:
            for token in (None, "mcph_not-a-token"):
                status, headers, text = post(port, body, token)
                assert status == 401, text
                challenge = headers["www-authenticate"]
                assert challenge.startswith("Bearer ")
                assert 'resource_metadata="http://127.0.0.1:' in challenge
                assert b"mcphost tokens create" in text or b"Bearer" in text
            meta_url = challenge.split('resource_metadata="')[1].split('"')[0]
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            conn.request("GET", meta_url.split(str(port), 1)[1])
            meta = json.loads(conn.getresponse().read())
            assert meta["resource"] == served.front.url
            assert meta["bearer_methods_supported"] == ["header"]
            status, _, text = post(port, body, served.token)
            assert status == 200, text

        await asyncio.to_thread(checks)


async def test_a_revoked_or_expired_token_is_refused_from_the_next_request(
    mcp_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    tokens_file = Home(mcp_home).tokens_file

    async with embedded(mcp_home, [plugin_dirs["textkit"]]) as served:
        port = served.front.port
        body = modern_call("textkit.upper", {"text": "x"})
        doomed, _ = create_token(tokens_file, "doomed")
        stale, _ = create_token(tokens_file, "stale", expires=10.0, now=1.0)

        def checks() -> None:
            assert post(port, body, doomed)[0] == 200
            revoke_token(tokens_file, "doomed")
            assert post(port, body, doomed)[0] == 401
            assert post(port, body, stale)[0] == 401
            assert post(port, body, served.token)[0] == 200

        await asyncio.to_thread(checks)


async def test_a_token_limited_to_tools_lists_only_those_and_cannot_call_others(
    mcp_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    tokens_file = Home(mcp_home).tokens_file

    dirs = [plugin_dirs["textkit"], plugin_dirs["mathkit"]]
    async with embedded(mcp_home, dirs) as served:
        limited, _ = create_token(tokens_file, "text-only", tools=["textkit.up*"])
        for mode in ("auto", "legacy"):
            async with http_client(served.front.url, limited, mode=mode) as client:
                names = {t.name for t in (await client.list_tools()).tools}
                assert names == {"textkit.upper"}
                res = await client.call_tool("textkit.upper", {"text": "ok"})
                assert res.structured_content == {"result": "OK"}
                with pytest.raises(MCPError) as err:
                    await client.call_tool("mathkit.is_prime", {"n": 7})
                assert "not allowed for token 'text-only'" in err.value.error.message
        async with served.client() as client:  # an unlimited token still sees them all
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"textkit.upper", "mathkit.is_prime"} <= names


async def test_a_session_is_usable_only_with_the_token_that_made_it(
    mcp_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    tokens_file = Home(mcp_home).tokens_file

    async with embedded(mcp_home, [plugin_dirs["textkit"]]) as served:
        other, _ = create_token(tokens_file, "other")
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}},
        }
        ping = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping"}).encode()

        def checks() -> None:
            port = served.front.port
            status, headers, _ = post(port, json.dumps(init).encode(), served.token)
            assert status == 200
            sid = headers["mcp-session-id"]
            assert (
                post(port, ping, served.token, Mcp_Session_Id=sid, MCP_Protocol_Version="")[0]
                == 200
            )
            assert post(port, ping, other, Mcp_Session_Id=sid, MCP_Protocol_Version="")[0] == 404

        await asyncio.to_thread(checks)


def test_no_auth_is_refused_off_loopback_and_warns_on_loopback(
    serve_argv: list[str], mcp_home: Path
) -> None:
    out = subprocess.run(
        [*serve_argv, "--http", "0.0.0.0:0", "--allow-remote", "--no-auth"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "refusing --no-auth on 0.0.0.0" in out.stderr and "Traceback" not in out.stderr
    with serve_http_process(serve_argv, mcp_home, "--no-auth") as served:
        assert "WITHOUT authentication" in served.log[0]
        body = modern_call("textkit.upper", {"text": "open"})
        status, _, text = post(served.port, body, None)
        assert status == 200, text


def test_serving_http_with_no_tokens_yet_says_how_to_make_one(
    serve_argv: list[str],
) -> None:
    proc = subprocess.Popen(
        [*serve_argv, "--http", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "no bearer tokens yet" in first and "mcphost tokens create" in first
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def test_allow_remote_keeps_the_host_check_and_allow_host_adds_names(mcp_home: Path) -> None:
    tokens_file = Home(mcp_home).tokens_file
    token, _ = create_token(tokens_file, "remote")
    server = McpServer(Host(mcp_home, environment=False, registry=False))
    options = HttpOptions(
        host="0.0.0.0",
        port=0,
        allow_remote=True,
        allowed_hosts=["mcp.example.internal"],
        tokens_file=tokens_file,
    )
    front = HttpFrontEnd(server, options)
    port = await front.start()
    ping = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": MODERN}}
    ).encode()
    try:

        def checks() -> None:
            assert post(port, ping, token, Host="evil.example")[0] == 421
            assert post(port, ping, token, Host="mcp.example.internal:8765")[0] == 200
            assert post(port, ping, token, Host=f"127.0.0.1:{port}")[0] == 200

        await asyncio.to_thread(checks)
    finally:
        await front.close()
        await server.close()


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        return sock.recv(65536)


async def test_smuggling_userinfo_origins_wrong_media_types_and_missing_accept_are_refused(
    mcp_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    async with embedded(mcp_home, [plugin_dirs["textkit"]]) as served:
        port, token = served.front.port, served.token
        body = modern_call("textkit.upper", {"text": "x"})

        def checks() -> None:
            assert post(port, body, token, Origin="http://localhost:1@evil.example")[0] == 403
            assert post(port, body, token, Origin="http://localhost:3000")[0] == 200
            assert post(port, body, token, Content_Type="application/jsonx")[0] == 415
            assert post(port, body, token, Content_Type="application/json-seq")[0] == 415
            ok = post(port, body, token, Content_Type="application/json; charset=utf-8")
            assert ok[0] == 200
            assert post(port, body, token, Accept="")[0] == 406
            both = (
                b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\n"
                b"Accept: application/json, text/event-stream\r\n"
                b"MCP-Protocol-Version: 2026-07-28\r\n"
                b"Authorization: Bearer " + token.encode() + b"\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
                + f"{len(body):x}".encode()
                + b"\r\n"
                + body
                + b"\r\n0\r\n\r\n"
            )
            assert raw_request(port, both).startswith(b"HTTP/1.1 400")
            assert post(port, body, token)[0] == 200

        await asyncio.to_thread(checks)


def test_json_nested_too_deeply_gets_a_json_rpc_error_and_400_not_a_closed_connection(
    serve_argv: list[str], mcp_home: Path
) -> None:
    # A real server process: a RecursionError inside the test process would upset it.
    with serve_http_process(serve_argv, mcp_home) as served:
        nested = b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"a": ' + (
            b"[" * 100_000 + b"]" * 100_000 + b"}}"
        )
        status, _, text = post(served.port, nested, served.token)
        assert status == 400
        assert json.loads(text)["error"]["code"] == -32700
        body = modern_call("textkit.upper", {"text": "x"})
        assert post(served.port, body, served.token)[0] == 200
