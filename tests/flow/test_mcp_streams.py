"""Streams over MCP (``mcphost serve`` over stdio, a real client process's pipes): a
streaming tool sends progress per item and, to a client that opted in (draft SEP-2998),
each item as ``notifications/tools/partial_result`` with its sequence number; partial
results are never dropped: a client that stops reading pauses the stream, and the
server's memory stays bounded meanwhile. The priority comes from ``_meta``."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

CAPS = "io.modelcontextprotocol/clientCapabilities"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "flow-test", "version": "0"},
    },
}


class Serve:
    """``mcphost serve`` over pipes, read only when the test says so."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self._buf = b""

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj).encode() + b"\n")
        self.proc.stdin.flush()

    def read(self, timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([fd], [], [], left)[0], "serve wrote nothing"
            chunk = os.read(fd, 1 << 16)
            assert chunk, "serve closed its stdout"
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def until_answered(self, rid: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        seen = []
        while True:
            msg = self.read()
            if msg.get("id") == rid:
                return seen, msg
            seen.append(msg)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def serve(tmp_path: Path, plugin_dirs: dict[str, Path]) -> Iterator[Serve]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("allow_unsigned = true\nping_timeout = 120\n")
    script = Path(sys.executable).with_name("mcphost")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "mcphost.host.cli"]
    s = Serve(
        [
            *cmd,
            "--home",
            str(home),
            "serve",
            "--no-environment",
            "--plugin-dir",
            str(plugin_dirs["textkit"]),
        ]
    )
    try:
        s.send(INIT)
        s.until_answered(1)
        s.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        yield s
    finally:
        s.close()


def call(rid: int, n: int, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "tools/call",
        "params": {"name": "textkit.count_to", "arguments": {"n": n}, "_meta": meta},
    }


def partials(messages: list[dict[str, Any]], token: str) -> list[dict[str, Any]]:
    return [
        m["params"]
        for m in messages
        if m.get("method") == "notifications/tools/partial_result"
        and m["params"]["partialResultToken"] == token
    ]


def test_a_client_that_opts_in_gets_every_item_as_a_partial_result_in_order(
    serve: Serve,
) -> None:
    serve.send(
        call(
            2,
            30,
            {
                "progressToken": "t2",
                CAPS: {"partialResults": {}},
                "partialResultToken": "p2",
                "mcphost/priority": 7,
            },
        )
    )
    seen, answer = serve.until_answered(2)
    got = partials(seen, "p2")
    assert [p["seq"] for p in got] == list(range(30))
    assert [p["content"] for p in got] == [[{"type": "text", "text": str(i)}] for i in range(30)]
    assert any(m.get("method") == "notifications/progress" for m in seen)
    # The final result stays complete and authoritative.
    result = answer["result"]
    assert not result.get("isError")
    assert [b["text"] for b in result["content"]] == [str(i) for i in range(30)]
    # Without the capability (or without a token) there are no partial results.
    serve.send(call(3, 5, {"partialResultToken": "p3"}))
    seen, answer = serve.until_answered(3)
    assert partials(seen, "p3") == []
    assert len(answer["result"]["content"]) == 5


def test_a_bad_priority_in_meta_is_invalid_params(serve: Serve) -> None:
    serve.send(call(2, 3, {"mcphost/priority": 1000}))
    _, answer = serve.until_answered(2)
    error = answer["error"]
    assert error["code"] == -32602
    assert "must be a whole number from 0 (the highest priority) to 100" in error["message"]
    assert "got 1000" in error["message"]


def test_a_client_that_stops_reading_pauses_the_stream_and_loses_no_partial_result(
    serve: Serve,
) -> None:
    n = 60_000
    server = psutil.Process(serve.proc.pid)
    before = server.memory_info().rss
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            try:
                peak[0] = max(peak[0], server.memory_info().rss)
            except psutil.Error:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    serve.send(call(2, n, {CAPS: {"partialResults": {}}, "partialResultToken": "slow"}))
    time.sleep(2.0)  # the client reads nothing meanwhile: the stream must pause
    stalled = peak[0]
    seen, answer = serve.until_answered(2)
    stop.set()
    sampler.join()
    got = partials(seen, "slow")
    assert [p["seq"] for p in got] == list(range(n)), "a partial result was lost or reordered"
    assert len(answer["result"]["content"]) == 1  # one block for a long list
    # While the client read nothing, the server held about one outbox (1 MiB) and one
    # stream buffer (1 MiB high watermark): far below the 60,000 items' notifications.
    assert stalled - before < 48 * 1024 * 1024, (before, stalled)


def test_a_slow_sse_reader_pauses_the_stream_keeps_memory_bounded_and_loses_nothing(
    tmp_path: Path, plugin_dirs: dict[str, Path]
) -> None:
    """Streamable HTTP (``serve --http``), a client that reads its SSE stream slowly
    through a small receive buffer: every partial result arrives, once and in order."""
    import re
    import secrets
    import socket

    from mcphost.host.home import Home
    from mcphost.security.tokens import create_token

    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("allow_unsigned = true\nping_timeout = 120\n")
    token, _ = create_token(Home(home).tokens_file, f"test-{secrets.token_hex(4)}")
    script = Path(sys.executable).with_name("mcphost")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "mcphost.host.cli"]
    proc = subprocess.Popen(
        [
            *cmd,
            "--home",
            str(home),
            "serve",
            "--no-environment",
            "--plugin-dir",
            str(plugin_dirs["textkit"]),
            "--http",
            "127.0.0.1:0",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        port = 0
        deadline = time.monotonic() + 60
        while not port and time.monotonic() < deadline:
            line = proc.stderr.readline().decode(errors="replace")
            assert line, "serve --http ended before it served"
            m = re.search(r"serving MCP at http://[^ ]*:(\d+)/", line)
            port = int(m.group(1)) if m else 0
        assert port
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        server = psutil.Process(proc.pid)
        n = 20_000
        meta = {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            CAPS: {"partialResults": {}},
            "partialResultToken": "sse",
        }
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "textkit.count_to", "arguments": {"n": n}, "_meta": meta},
            }
        ).encode()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", port))
        sock.sendall(
            (
                f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
                f"MCP-Protocol-Version: 2026-07-28\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        base = server.memory_info().rss
        peak = base
        data = b""
        slow_until = time.monotonic() + 3.0
        while b'"id": 2' not in data[-4096:] and b'"id":2' not in data[-4096:]:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
            if time.monotonic() < slow_until:
                time.sleep(0.01)  # about 400 KB/s at most: far slower than the tool
                peak = max(peak, server.memory_info().rss)
        sock.close()
        seqs = [int(s) for s in re.findall(rb'"seq": ?(\d+)', data)]
        assert seqs == list(range(n)), "a partial result was lost or reordered"
        assert (peak - base) < 48 * 1024 * 1024, (base, peak)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
