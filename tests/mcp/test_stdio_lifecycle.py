"""``mcphost serve`` over stdio from start to end: input that ends, files in place of
pipes, a client that closes stdout, and input no decoder should choke on."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from support.procs import assert_process_gone

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "script", "version": "0"},
    },
}


def call(rid: int, name: str, args: dict[str, Any]) -> bytes:
    msg = {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "tools/call",
        "params": {"name": name, "arguments": args},
    }
    return json.dumps(msg).encode()


def script(*, trailing_newline: bool) -> bytes:
    """initialize, two calls that take a moment, and a last call, newline or not."""
    lines = [
        json.dumps(INIT).encode(),
        b'{"jsonrpc": "2.0", "method": "notifications/initialized"}',
        call(2, "textkit.sleep", {"seconds": 0.5}),
        call(3, "textkit.upper", {"text": "second"}),
        call(4, "textkit.upper", {"text": "last"}),
    ]
    return b"\n".join(lines) + (b"\n" if trailing_newline else b"")


def answers(out: bytes) -> dict[Any, dict[str, Any]]:
    return {m["id"]: m for m in map(json.loads, out.splitlines()) if "id" in m}


def check_answers(out: bytes) -> None:
    got = answers(out)
    assert sorted(got) == [1, 2, 3, 4], out[-2000:]
    assert got[1]["result"]["protocolVersion"] == "2025-11-25"
    assert got[2]["result"]["structuredContent"] == {"result": 0.5}
    assert got[3]["result"]["structuredContent"] == {"result": "SECOND"}
    assert got[4]["result"]["structuredContent"] == {"result": "LAST"}


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_every_request_read_before_input_ends_is_answered_then_serve_exits_0(
    serve_argv: list[str], trailing_newline: bool
) -> None:
    # printf '<initialize>\n<tools/call>\n...' | mcphost serve | cat
    proc = subprocess.run(
        serve_argv,
        input=script(trailing_newline=trailing_newline),
        capture_output=True,
        timeout=90,
    )
    check_answers(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize(
    ("stdin_kind", "stdout_kind"), [("file", "file"), ("file", "pipe"), ("pipe", "file")]
)
def test_serve_reads_requests_from_a_file_and_writes_answers_to_a_file(
    serve_argv: list[str], tmp_path: Path, stdin_kind: str, stdout_kind: str
) -> None:
    # mcphost serve < requests.jsonl > out.jsonl
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(script(trailing_newline=True))
    out_file = tmp_path / "out.jsonl"
    with requests.open("rb") as fin, out_file.open("wb") as fout:
        proc = subprocess.run(
            serve_argv,
            stdin=fin if stdin_kind == "file" else None,
            input=None if stdin_kind == "file" else requests.read_bytes(),
            stdout=fout if stdout_kind == "file" else subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=90,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    check_answers(out_file.read_bytes() if stdout_kind == "file" else proc.stdout)


def test_a_client_closing_stdout_mid_call_stops_the_call_its_worker_and_serve(
    serve_argv: list[str],
) -> None:
    proc = subprocess.Popen(
        serve_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps(INIT).encode() + b"\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["id"] == 1
        proc.stdin.write(call(2, "textkit.sleep", {"seconds": 60}) + b"\n")
        proc.stdin.flush()
        server = psutil.Process(proc.pid)
        deadline = time.monotonic() + 30
        workers: list[psutil.Process] = []
        while not workers and time.monotonic() < deadline:
            workers = server.children(recursive=True)
            time.sleep(0.05)
        assert workers, "no worker started for the call"
        # The client goes away by closing its end of stdout; stdin stays open.
        proc.stdout.close()
        assert proc.wait(timeout=30) == 0
        for worker in workers:  # none outlives serve
            assert_process_gone(worker, 10, reap=True)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_json_nested_a_thousand_levels_deep_gets_32700_and_the_same_reads_other_lines_answers(
    serve_argv: list[str],
) -> None:
    deep = (
        b'{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": '
        b'"textkit.upper", "arguments": {"text": ' + b"[" * 1000 + b"]" * 1000 + b"}}}"
    )
    assert len(deep) < 4096
    # One write: the deep line between two good requests, all in the same read.
    data = b"\n".join(
        [
            json.dumps(INIT).encode(),
            deep,
            b'{"jsonrpc": "2.0", "id": 3, "method": "ping"}',
            call(4, "textkit.upper", {"text": "fine"}),
        ]
    )
    proc = subprocess.run(serve_argv, input=data + b"\n", capture_output=True, timeout=90)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    errors = [m for m in lines if "error" in m]
    assert len(errors) == 1, lines
    assert errors[0]["error"]["code"] == -32700
    assert "nested too deeply" in errors[0]["error"]["message"]
    got = answers(proc.stdout)
    assert got[3]["result"] == {}
    assert got[4]["result"]["structuredContent"] == {"result": "FINE"}
    assert proc.returncode == 0


@pytest.mark.parametrize("shared", [True, False])
def test_serve_works_over_sockets_one_for_both_directions_or_one_each(
    serve_argv: list[str], shared: bool
) -> None:
    # inetd-style servers get one socket as stdin and stdout; libuv-based clients
    # (Node, Electron) give a socketpair for each.
    client_in, server_in = socket.socketpair()
    client_out, server_out = (client_in, server_in) if shared else socket.socketpair()
    with client_in, client_out:
        proc = subprocess.Popen(
            serve_argv, stdin=server_in, stdout=server_out, stderr=subprocess.DEVNULL
        )
        server_in.close()
        server_out.close()
        try:
            client_in.sendall(script(trailing_newline=False))
            client_in.shutdown(socket.SHUT_WR)
            client_out.settimeout(60)
            out = b""
            while chunk := client_out.recv(65536):
                out += chunk
            check_answers(out)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
