"""``mcphost serve --metrics``: a real server's /metrics moves by exactly what happened
(calls that answer and calls that fail, a killed worker, a swap and a rollback made with
the CLI), in text ``prometheus_client.parser`` reads."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.cli import mcphost_command, run_mcphost
from support.waiting import wait_until_sync

from mcphost.host import Home

SERVE = mcphost_command()
METRICS = ["--metrics", "127.0.0.1:0"]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


class Served:
    """``mcphost serve --metrics 127.0.0.1:0`` over stdio, driven with JSON-RPC lines."""

    def __init__(self, home: Home) -> None:
        self.proc = subprocess.Popen(
            [*SERVE, "--home", str(home.root), "serve", "--no-environment", *METRICS],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.errors: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=self._pump, args=(self.proc.stdout, self.lines), daemon=True
        ).start()
        threading.Thread(target=self._pump_err, daemon=True).start()
        self.next_id = 0
        self.url = ""
        deadline = time.monotonic() + 30
        while not self.url:
            line = self.errors.get(timeout=max(0.1, deadline - time.monotonic()))
            found = re.search(r"serving metrics at (\S+)", line)
            if found:
                self.url = found.group(1)

    @staticmethod
    def _pump(stream: Any, out: queue.Queue[bytes]) -> None:
        for line in stream:
            out.put(line)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.errors.put(line.decode(errors="replace"))

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        self.proc.stdin.flush()
        while True:
            answer: dict[str, Any] = json.loads(self.lines.get(timeout=30))
            if answer.get("id") == self.next_id:
                return answer

    def call(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request("tools/call", {"name": tool, "arguments": args})[
            "result"
        ]
        return result

    def scrape(self) -> Samples:
        with urllib.request.urlopen(self.url, timeout=10) as resp:
            return parse(resp.read().decode())

    def wait_for(self, check: Callable[[Samples], bool], what: str) -> Samples:
        """Scrape until ``check`` holds (the server acts on its own time), at most 30 s."""
        last: list[Samples] = []

        def holds() -> bool:
            last[:] = [self.scrape()]
            return check(last[0])

        wait_until_sync(holds, 30, f"{what} in /metrics", interval=0.05)
        return last[0]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def served(home: Home, wheels: dict[str, Path]) -> Iterator[Served]:
    for args in (
        ["plugin", "install", str(wheels["1.0"]), "--yes"],
        ["plugin", "install", str(wheels["1.1"]), "--yes", "--no-activate"],
    ):
        proc = run_mcphost(*args, home=home)
        assert proc.returncode == 0, proc.stderr
    s = Served(home)
    try:
        yield s
    finally:
        s.close()


def v(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def kill_worker(serve_pid: int) -> None:
    """SIGKILL the worker (the innermost process under the server)."""
    leaves = [p for p in psutil.Process(serve_pid).children(recursive=True) if not p.children()]
    assert len(leaves) == 1, leaves
    leaves[0].send_signal(signal.SIGKILL)


def test_serve_metrics_count_calls_crashes_swaps_and_rollbacks_exactly(
    no_leftover_workers: None, served: Served
) -> None:
    s = served
    s.request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}})
    echo = {"plugin": "textkit", "tool": "textkit.echo"}
    before = s.scrape()
    for i in range(3):
        assert s.call("textkit.echo", {"text": f"t{i}"})["content"][0]["text"] == f"t{i}"
    assert s.call("textkit.echo", {"text": 5})["isError"] is True
    after = s.scrape()
    assert v(after, "mcphost_tool_calls_total", outcome="ok", **echo) == 3
    assert v(after, "mcphost_tool_calls_total", outcome="invalid_arguments", **echo) == 1
    assert v(after, "mcphost_tool_call_duration_seconds_count", **echo) == 4
    assert v(after, "mcphost_tool_calls_in_flight", plugin="textkit") == 0
    calls = {"method": "tools/call", "outcome": "ok"}
    assert (
        v(after, "mcphost_mcp_requests_total", **calls)
        - v(before, "mcphost_mcp_requests_total", **calls)
        == 4
    )
    assert v(after, "mcphost_mcp_requests_total", method="initialize", outcome="ok") == 1
    assert v(after, "mcphost_mcp_sessions", transport="stdio") == 1
    assert v(after, "mcphost_mcp_received_bytes_total") > 0
    assert v(after, "mcphost_mcp_sent_bytes_total") > 0
    starts = v(after, "mcphost_worker_starts_total", plugin="textkit")
    assert v(after, "mcphost_worker_state", plugin="textkit", version="1.0.0", state="running")
    assert (
        v(
            after,
            "mcphost_worker_memory_bytes",
            plugin="textkit",
            version="1.0.0",
            source=next(
                dict(k[1])["source"] for k in after if k[0] == "mcphost_worker_memory_bytes"
            ),
        )
        > 0
    )

    kill_worker(s.proc.pid)
    crashed = s.wait_for(
        lambda m: v(m, "mcphost_worker_crashes_total", plugin="textkit", reason="signal") == 1,
        "the crash",
    )
    assert s.call("textkit.echo", {"text": "again"})["content"][0]["text"] == "again"
    restarted = s.scrape()
    assert v(restarted, "mcphost_worker_restarts_total", plugin="textkit", reason="signal") == 1
    assert v(restarted, "mcphost_worker_starts_total", plugin="textkit") == starts + 1
    assert sum(n for (name, _), n in crashed.items() if name == "mcphost_worker_crashes_total") == 1

    for args, swaps, rollbacks in (
        (["plugin", "swap", "textkit", "1.1"], 1, 0),
        (["plugin", "rollback", "textkit"], 2, 1),
    ):
        done = run_mcphost(*args, home=Home(s_home(s)))
        assert done.returncode == 0, done.stderr
        m = s.wait_for(
            lambda m, n=swaps: v(m, "mcphost_registry_swaps_total", plugin="textkit") == n,
            f"swap {swaps}",
        )
        assert v(m, "mcphost_registry_rollbacks_total", plugin="textkit") == rollbacks
        assert v(m, "mcphost_registry_swap_duration_seconds_count") == swaps
    end = s.scrape()
    assert v(end, "mcphost_tool_calls_total", outcome="ok", **echo) == 4
    assert v(end, "mcphost_worker_crashes_total", plugin="textkit", reason="signal") == 1
    assert v(end, "mcphost_verification_failures_total", plugin="textkit") == 0


def s_home(s: Served) -> Path:
    argv = s.proc.args
    assert isinstance(argv, list)
    return Path(argv[argv.index("--home") + 1])
