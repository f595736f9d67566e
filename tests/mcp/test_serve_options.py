"""``mcphost serve`` options that shape what clients are told: instructions, log level."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from support.raw_stdio import RawStdio

from mcphost.host.mcp import ServerOptions
from mcphost.sdk.errors import ConfigError

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
SLEEP = {
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/call",
    "params": {"name": "textkit.sleep", "arguments": {"seconds": 0.01}},
}


def _session(argv: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Initialize, call textkit.sleep (it logs ``sleeping ...`` at info), and return the
    initialize result and every message up to the call's answer."""
    raw = RawStdio(argv)
    try:
        raw.send_json(INIT)
        init = raw.read()["result"]
        raw.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})
        raw.send_json(SLEEP)
        seen = [raw.read()]
        while seen[-1].get("id") != 2:
            seen.append(raw.read())
        assert raw.close() == 0
        return init, seen
    finally:
        if raw.proc.poll() is None:
            raw.proc.kill()
            raw.proc.wait()


def _logs(seen: list[dict[str, Any]]) -> list[str]:
    return [m["params"]["data"] for m in seen if m.get("method") == "notifications/message"]


def test_serve_sends_the_instructions_and_the_log_level_it_is_given(
    serve_argv: list[str],
) -> None:
    text = "Use textkit.* for text and mathkit.* for numbers."
    init, seen = _session([*serve_argv, "--instructions", text, "--client-log-level", "warning"])
    assert init["instructions"] == text
    assert "error" not in seen[-1], seen[-1]
    assert _logs(seen) == []  # the tool's info line is below the session's level
    # By default: no instructions, and info lines reach the session.
    init, seen = _session(serve_argv)
    assert "instructions" not in init
    assert any("sleeping" in str(line) for line in _logs(seen)), seen


def test_serve_refuses_a_log_level_mcp_does_not_have_and_names_the_levels(
    serve_argv: list[str],
) -> None:
    proc = subprocess.run(
        [*serve_argv, "--client-log-level", "verbose"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "--client-log-level" in proc.stderr and "'verbose'" in proc.stderr
    assert "debug" in proc.stderr and "emergency" in proc.stderr
    assert proc.stdout == ""


def test_server_options_refuse_a_default_log_level_mcp_does_not_have() -> None:
    with pytest.raises(ConfigError, match="'verbose' is not an MCP log level; use one of: debug"):
        ServerOptions(default_log_level="verbose")
