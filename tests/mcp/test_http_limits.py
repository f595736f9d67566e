"""What a client can make ``mcphost serve --http`` hold is bounded: memory toward a client
that does not read, slow and idle connections, connections in all and per address,
accept errors, a port already in use. Resource bounds are measured on the real process."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
from http_helpers import ServedProcess, serve_http_process

MODERN = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}


def request_bytes(served: ServedProcess, body: bytes) -> bytes:
    return (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\n"
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"MCP-Protocol-Version: 2026-07-28\r\nAuthorization: Bearer {served.token}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(20)
    sock.connect(("127.0.0.1", port))
    return sock


def read_until_closed(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection (or the deadline)."""
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data
        except ConnectionResetError:
            return data + b"<reset>"
        if not chunk:
            return data + b"<closed>"
        data += chunk


#: Growth allowed while a client does not read a call that sends 300,000 progress
#: notifications (about 40 MB of SSE). The call's own result (its items, collected by the
#: session) is part of it; the notifications are not.
SILENT_CLIENT_GROWTH_MB = 30


def test_a_client_that_does_not_read_leaves_the_server_rss_bounded(
    serve_argv: list[str], mcp_home: Path
) -> None:
    n = 300_000
    with serve_http_process(serve_argv, mcp_home) as served:
        proc = psutil.Process(served.proc.pid)
        warm = connect(served.port)
        call = {"name": "textkit.upper", "arguments": {"text": "a"}, "_meta": MODERN}
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call})
        warm.sendall(request_bytes(served, body.encode()))
        assert warm.recv(65536).startswith(b"HTTP/1.1 200")
        warm.close()
        base = proc.memory_info().rss
        silent = socket.socket()
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        silent.connect(("127.0.0.1", served.port))
        meta = dict(MODERN, progressToken="p")
        call = {"name": "textkit.count_to", "arguments": {"n": n}, "_meta": meta}
        body = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call})
        silent.sendall(request_bytes(served, body.encode()))
        peak = base
        window = time.monotonic() + 15  # the client reads nothing for 15 s
        while time.monotonic() < window:
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.2)
        growth = (peak - base) / 2**20
        print(f"RSS {base / 2**20:.1f} MB -> peak {peak / 2**20:.1f} MB with a silent client")
        print(f"growth {growth:.1f} MB, bound {SILENT_CLIENT_GROWTH_MB} MB")
        assert growth <= SILENT_CLIENT_GROWTH_MB
        # Reading now, the client gets its answer and a count of what was dropped.
        data = read_until_closed(silent, time.monotonic() + 120)
        assert b'"structuredContent"' in data, data[-500:]
        assert b"dropped" in data or data.count(b"notifications/progress") < n


def test_slow_partial_and_idle_connections_are_closed_after_their_timeouts(
    serve_argv: list[str], mcp_home: Path
) -> None:
    timeouts = ["--header-timeout", "1", "--body-timeout", "1", "--keep-alive", "1"]
    caps = ["--max-connections-per-client", "300", "--max-connections", "300"]
    with serve_http_process(serve_argv, mcp_home, *timeouts, *caps) as served:
        loris = []
        for _ in range(200):
            sock = connect(served.port)
            sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            loris.append(sock)
        silent = connect(served.port)  # says nothing at all
        partial_body = connect(served.port)
        partial_body.sendall(request_bytes(served, b"{}")[:-2] + b"{")  # 1 of 2 bytes
        keep_alive = connect(served.port)
        call = {"name": "textkit.upper", "arguments": {"text": "a"}, "_meta": MODERN}
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call})
        keep_alive.sendall(request_bytes(served, body.encode()))
        deadline = time.monotonic() + 15
        answers = [read_until_closed(s, deadline) for s in loris]
        still_open = sum(1 for a in answers if not a.endswith((b"<closed>", b"<reset>")))
        print(f"slowloris: {still_open} of 200 connections still open after the header timeout")
        assert still_open == 0
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers)
        assert read_until_closed(silent, deadline).endswith(b"<closed>")
        slow = read_until_closed(partial_body, deadline)
        assert slow.startswith(b"HTTP/1.1 408") and slow.endswith(b"<closed>")
        idle = read_until_closed(keep_alive, deadline)
        assert idle.startswith(b"HTTP/1.1 200") and idle.endswith(b"<closed>")
        assert served.proc.poll() is None


def test_connections_over_the_total_or_per_address_cap_get_503_at_once(
    serve_argv: list[str], mcp_home: Path
) -> None:
    caps = ["--max-connections", "8", "--max-connections-per-client", "4"]
    with serve_http_process(serve_argv, mcp_home, *caps) as served:
        held = [connect(served.port, "127.0.0.1") for _ in range(4)]
        over = connect(served.port, "127.0.0.1")
        answer = read_until_closed(over, time.monotonic() + 10)
        assert answer.startswith(b"HTTP/1.1 503") and b"your address" in answer
        held += [connect(served.port, "127.0.0.2") for _ in range(4)]
        full = connect(served.port, "127.0.0.3")
        answer = read_until_closed(full, time.monotonic() + 10)
        assert answer.startswith(b"HTTP/1.1 503") and b"limit of 8 connections" in answer
        for sock in held:
            sock.close()


def test_a_low_open_files_limit_answers_new_clients_at_once_without_tracebacks(
    serve_argv: list[str], mcp_home: Path
) -> None:
    with serve_http_process(serve_argv, mcp_home, limit_files=64) as served:
        held = []
        for _ in range(100):
            held.append(connect(served.port))
        newcomer = connect(served.port)
        newcomer.sendall(request_bytes(served, b"{}"))
        answer = read_until_closed(newcomer, time.monotonic() + 10)
        assert answer.startswith(b"HTTP/1.1 503"), answer
        for sock in held:
            sock.close()
        served.proc.terminate()
        served.proc.wait(timeout=20)
    text = "\n".join(served.log)
    assert "Traceback" not in text
    assert len(served.log) < 10, text[-3000:]


BACKOFF_SCRIPT = r"""
import asyncio, logging, os, resource, socket, sys
from mcphost.host.mcp.http_conn import ConnectionGuard, Limits, accept_forever

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


async def main() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    guard = ConnectionGuard(Limits(max_connections=1000, max_per_client=1000))
    task = asyncio.ensure_future(accept_forever(sock, guard, asyncio.Protocol))
    filler = []
    while True:  # use up every descriptor: accept() now fails with EMFILE
        try:
            filler.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            break
    print(sock.getsockname()[1], flush=True)
    sys.stdin.readline()  # the test has connected; let accept fail for 2 s
    await asyncio.sleep(2)
    for fd in filler:
        os.close(fd)
    await asyncio.sleep(1)
    print("accepted", guard.total, flush=True)
    task.cancel()


asyncio.run(main())
"""


def test_accept_errors_back_off_and_log_one_line(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", BACKOFF_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    port = int(proc.stdout.readline())
    clients = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(3)]
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=60)
    for c in clients:
        c.close()
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert sum("cannot accept HTTP connections" in line for line in lines) == 1, err
    assert any("accepting HTTP connections again" in line for line in lines), err
    assert "accepted 3" in out


def test_a_port_already_in_use_is_one_line_without_a_traceback(serve_argv: list[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        out = subprocess.run(
            [*serve_argv, "--http", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "already in use" in errors[0] and "--http" in errors[0]


def test_serving_stdio_never_imports_uvicorn() -> None:
    code = (
        "import sys\n"
        "import mcphost.host.cli.serve, mcphost.host.mcp.stdio\n"
        "assert 'uvicorn' not in sys.modules, 'uvicorn was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


INIT = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}},
    }
).encode()

#: Growth allowed over 20,000 initialize calls with at most 100 sessions kept (one
#: session costs about 560 bytes: with no cap, the same calls grow the server by 11-14 MB;
#: sessions never go idle here, so only the cap bounds them).
INITIALIZE_GROWTH_MB = 5


def test_many_initialize_calls_keep_the_server_rss_bounded_by_the_session_cap(
    serve_argv: list[str], mcp_home: Path
) -> None:
    limits = ["--max-sessions", "100", "--session-idle", "600"]
    with serve_http_process(serve_argv, mcp_home, *limits) as served:
        proc = psutil.Process(served.proc.pid)
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=20)
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "Authorization": f"Bearer {served.token}",
        }

        def initialize() -> int:
            conn.request("POST", "/mcp", body=INIT, headers=headers)
            resp = conn.getresponse()
            resp.read()
            return resp.status

        def list_tools() -> list[str]:
            # Answered once the host has started: its modules are imported in a thread
            # after the first handshake (tens of MB, once), which is not session growth.
            conn.request("POST", "/mcp", body=INIT, headers=headers)
            resp = conn.getresponse()
            resp.read()
            session = {**headers, "Mcp-Session-Id": resp.getheader("Mcp-Session-Id") or ""}
            for body in (
                {"jsonrpc": "2.0", "method": "notifications/initialized"},
                {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            ):
                conn.request("POST", "/mcp", body=json.dumps(body).encode(), headers=session)
                resp = conn.getresponse()
                answer = resp.read()
            tools = json.loads(answer)["result"]["tools"]
            return [tool["name"] for tool in tools]

        assert "textkit.upper" in list_tools()
        for _ in range(200):
            initialize()
        base = proc.memory_info().rss
        statuses = Counter(initialize() for _ in range(20_000))
        growth = (proc.memory_info().rss - base) / 2**20
        print(f"20,000 initialize calls: {dict(statuses)}; RSS growth {growth:.2f} MB")
        print(f"bound {INITIALIZE_GROWTH_MB} MB")
        assert set(statuses) <= {200, 503}
        assert statuses[503] > 0, "the session cap never refused a handshake"
        assert growth <= INITIALIZE_GROWTH_MB
