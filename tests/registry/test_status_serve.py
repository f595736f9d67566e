"""``mcphost status --json`` against a real ``mcphost serve``: each field moves by what
happened (calls that answer and fail, a killed worker's restart, a swap made with the
CLI, a setting that needs a restart, a config.toml that does not validate)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from support.cli import run_mcphost
from test_metrics_serve import Served, kill_worker

from mcphost.host import Home


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


def status(home: Home) -> dict[str, Any]:
    done = run_mcphost("status", "--json", home=home)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["home"] == str(home.root)
    (host,) = data["hosts"]
    assert isinstance(host, dict)
    return host


def wait_status(home: Home, check: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        now = status(home)
        if check(now):
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never showed in status: {now}")
        time.sleep(0.1)


def textkit(snap: dict[str, Any]) -> dict[str, Any]:
    (p,) = [p for p in snap["plugins"] if p["plugin"] == "textkit"]
    return p


def worker_pids(serve_pid: int) -> set[int]:
    """The worker's processes: the one the host started (bubblewrap, when it jails) and
    those under it, down to the plugin's Python."""
    procs = psutil.Process(serve_pid).children(recursive=True)
    leaves = [p for p in procs if not p.children()]
    assert len(leaves) == 1, leaves
    return {leaves[0].pid, *(p.pid for p in leaves[0].parents())} & {p.pid for p in procs}


def test_status_json_of_a_running_serve_follows_calls_restarts_swaps_and_settings(
    no_leftover_workers: None, home: Home, served: Served
) -> None:
    s = served
    s.request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}})
    for i in range(3):
        assert s.call("textkit.echo", {"text": f"t{i}"})["content"][0]["text"] == f"t{i}"
    assert s.call("textkit.echo", {"text": 5})["isError"] is True

    first = status(home)
    assert first["pid"] == s.proc.pid
    assert "serve" in first["argv"]
    assert first["frontend"] == {"transport": "stdio", "sessions": 1, "sessions_opened": 1}
    assert first["uptime_seconds"] >= 0
    assert first["streams"] == [] and first["queues"] == []
    assert first["restart_pending"] == [] and first["config_error"] is None
    assert first["events"] == []
    p = textkit(first)
    assert (p["version"], p["state"], p["restarts"]) == ("1.0.0", "running", 0)
    assert p["pid"] in worker_pids(s.proc.pid)
    assert p["calls"] == 4 and p["errors"] == {"invalid_arguments": 1}
    assert p["in_flight"] == 0
    assert p["calls_per_second"] > 0
    assert 0 < p["p50_ms"] <= p["p99_ms"]
    assert p["memory_mb"] > 0 and p["cpu_seconds"] >= 0

    kill_worker(s.proc.pid)
    wait_status(home, lambda h: [e["kind"] for e in h["events"]] == ["crash"], "the crash")
    assert s.call("textkit.echo", {"text": "again"})["content"][0]["text"] == "again"
    restarted = textkit(status(home))
    assert restarted["restarts"] == 1
    assert restarted["pid"] in worker_pids(s.proc.pid) - {p["pid"]}
    assert restarted["calls"] == 5 and restarted["worker_calls"] == 1

    done = run_mcphost("plugin", "swap", "textkit", "1.1", home=home)
    assert done.returncode == 0, done.stderr
    swapped = wait_status(home, lambda h: textkit(h)["version"] == "1.1.0", "the swap")
    assert [(e["kind"], e["version"], e["detail"]) for e in swapped["events"]][-1] == (
        "swap",
        "1.1.0",
        "from 1.0.0",
    )

    done = run_mcphost("config", "set", "isolation", "rlimits", home=home)
    assert done.returncode == 0, done.stderr
    pending = wait_status(home, lambda h: bool(h["restart_pending"]), "the pending setting")
    assert pending["restart_pending"] == [
        {"key": "isolation", "running": "auto", "configured": "rlimits"}
    ]
    home.config_file.write_text("call_timeout = -1\n", encoding="utf-8")
    refused = wait_status(home, lambda h: h["config_error"] is not None, "the refused file")
    assert "call_timeout" in refused["config_error"]
