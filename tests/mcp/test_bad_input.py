"""Bad input keeps ``mcphost serve`` up and gets proper JSON-RPC answers (raw bytes)."""

from __future__ import annotations

from typing import Any

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}


def call(rid: int, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "tools/call",
        "params": {"name": name, "arguments": args},
    }


def test_tools_before_initialize_are_refused_and_served_once_it_is_answered(
    raw_stdio: Any,
) -> None:
    raw = raw_stdio
    raw.send_json({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    early = raw.read()
    assert early["id"] == 1 and early["error"]["code"] == -32600, early
    assert "before initialize: send initialize first" in early["error"]["message"]
    raw.send_json({**INIT, "id": 2})
    assert raw.read()["id"] == 2
    # Before notifications/initialized: the MCP lifecycle lets a server answer requests
    # once it has answered initialize; mcphost sends no requests it must hold back.
    raw.send_json(call(3, "textkit.upper", {"text": "early"}))
    answer = raw.read()
    assert answer["id"] == 3 and "error" not in answer, answer
    raw.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})
    raw.send_json(call(4, "textkit.upper", {"text": "after"}))
    assert raw.read()["id"] == 4


def test_malformed_and_wrong_messages_get_errors_and_a_normal_call_then_succeeds(
    raw_stdio: Any,
) -> None:
    raw = raw_stdio
    raw.send_json(INIT)
    init = raw.read()
    assert init["id"] == 1 and init["result"]["protocolVersion"] == "2025-06-18"
    assert init["result"]["capabilities"]["tools"] == {"listChanged": True}
    assert "logging" in init["result"]["capabilities"]
    raw.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})

    cases: list[tuple[bytes, int, Any]] = [
        (b"{not json at all\n", -32700, None),
        (b'{"hello": "world"}\n', -32600, None),
        (b'[{"jsonrpc": "2.0", "id": 5, "method": "ping"}]\n', -32600, None),
        (b'{"jsonrpc": "1.0", "id": 6, "method": "ping"}\n', -32600, 6),
        (b'{"jsonrpc": "2.0", "id": 7, "method": 42}\n', -32600, 7),
        (b'{"jsonrpc": "2.0", "id": 8, "method": "nope/nope"}\n', -32601, 8),
        (b'{"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {}}\n', -32602, 9),
        (
            b'{"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": '
            b'{"name": "textkit.upper", "arguments": [1]}}\n',
            -32602,
            10,
        ),
        (
            b'{"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": '
            b'{"name": "nosuch.tool", "arguments": {}}}\n',
            -32602,
            11,
        ),
        (
            b'{"jsonrpc": "2.0", "id": 12, "method": "tools/list", "params": '
            b'{"cursor": "bogus"}}\n',
            -32602,
            12,
        ),
        (
            b'{"jsonrpc": "2.0", "id": 13, "method": "logging/setLevel", "params": '
            b'{"level": "loud"}}\n',
            -32602,
            13,
        ),
        (b'{"jsonrpc": "2.0", "id": 14, "method": "ping", "params": "x"}\n', -32600, 14),
        (
            b'{"jsonrpc": "2.0", "id": 15, "method": "tools/call", "params": {"name": "'
            + b"x" * 6000
            + b'"}}\n',
            -32600,
            None,
        ),
    ]
    for line, code, rid in cases:
        raw.send(line)
        answer = raw.read()
        assert answer["error"]["code"] == code, (line[:80], answer)
        assert answer["id"] == rid
        assert answer["error"]["message"]

    # A message split over several writes still works; then a normal call succeeds.
    raw.send(b'{"jsonrpc": "2.0", "id": 20, "method"')
    raw.send(b': "ping"}\n')
    assert raw.read() == {"jsonrpc": "2.0", "id": 20, "result": {}}
    raw.send_json(call(21, "textkit.upper", {"text": "still up"}))
    ok = raw.read()
    assert ok["id"] == 21 and ok["result"]["structuredContent"] == {"result": "STILL UP"}
    assert raw.close() == 0


def test_a_2026_request_with_an_unknown_version_gets_32022_naming_the_supported_ones(
    raw_stdio: Any,
) -> None:
    raw = raw_stdio
    meta = {"io.modelcontextprotocol/clientCapabilities": {}}
    raw.send_json(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "server/discover",
            "params": {"_meta": {**meta, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}},
        }
    )
    err = raw.read()["error"]
    assert err["code"] == -32022
    assert err["data"] == {"supported": ["2026-07-28"], "requested": "2099-01-01"}
    raw.send_json(
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/list",
            "params": {"_meta": {**meta, "io.modelcontextprotocol/protocolVersion": "2026-07-28"}},
        }
    )
    listed = raw.read()["result"]
    assert {k: v for k, v in listed.items() if k != "tools"} == {
        "resultType": "complete",
        "ttlMs": 0,  # --tools-ttl-ms's default: no caching
        "cacheScope": "private",
    }
    assert {"textkit.upper", "mathkit.stats"} <= {t["name"] for t in listed["tools"]}
    raw.send_json(INIT | {"id": 3})
    err = raw.read()["error"]  # no handshake on a 2026 connection
    assert err["code"] == -32022
    assert "the initialize handshake is not accepted" in err["message"]
    assert err["data"] == {"supported": ["2026-07-28"], "requested": "2025-06-18"}
    raw.send_json({"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {}})
    err = raw.read()["error"]  # the envelope is required on every request
    assert err["code"] == -32602
    assert "params._meta must carry 'io.modelcontextprotocol/protocolVersion'" in err["message"]
    assert raw.close() == 0
