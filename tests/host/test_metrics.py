"""Metrics of one host: plain counts per call, worker and swap; Prometheus text that
parses; two hosts in one process never mix."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mcphost.host import Host, HostEvent
from mcphost.host.observe import HostMetrics, crash_reason
from mcphost.host.observe.export import render
from mcphost.host.observe.listener import MetricsListener, parse_bind
from mcphost.host.sources import PluginSource
from mcphost.sdk.errors import ConfigError, InvalidArguments

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

TROUBLE = """
import os
from mcphost.sdk import Plugin

plugin = Plugin("trouble")


@plugin.tool
def ok() -> str:
    return "ok"


@plugin.tool
def pid() -> int:
    return os.getpid()


@plugin.tool
def need(n: int) -> int:
    return n
"""


def samples(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str | Samples, name: str, **labels: str) -> float:
    found = samples(text) if isinstance(text, str) else text
    return found.get((name, frozenset(labels.items())), 0.0)


class _Code(Exception):
    code = "timeout"


def test_a_route_counts_ok_and_failed_calls_by_code_with_their_durations() -> None:
    m = HostMetrics()
    r = m.route("kit.echo", "kit")
    assert m.route("kit.echo", "kit") is r  # made once, then cached
    for _ in range(3):
        r.done(r.begin())
    t0 = r.begin()
    assert m.plugins["kit"].in_flight == 1
    r.failed(t0, _Code())
    r.failed(r.begin(), asyncio.CancelledError())
    assert (r.ok, r.errors, r.total) == (3, {"timeout": 1, "cancelled": 1}, 5)
    assert m.plugins["kit"].in_flight == 0
    assert sum(r.buckets) == 5
    text = render(m).decode()
    assert value(text, "mcphost_tool_calls_total", plugin="kit", tool="kit.echo", outcome="ok") == 3
    assert (
        value(text, "mcphost_tool_calls_total", plugin="kit", tool="kit.echo", outcome="timeout")
        == 1
    )
    labels = {"plugin": "kit", "tool": "kit.echo"}
    assert value(text, "mcphost_tool_call_duration_seconds_count", **labels) == 5
    assert value(text, "mcphost_tool_call_duration_seconds_bucket", le="+Inf", **labels) == 5
    assert value(text, "mcphost_tool_calls_in_flight", plugin="kit") == 0


def test_the_fast_text_says_exactly_what_the_registry_says() -> None:
    m = HostMetrics()
    for p in range(3):
        for t in range(4):
            r = m.route(f"p{p}.t{t}", f"p{p}")
            r.done(r.begin())
            r.failed(r.begin(), _Code())
    m.on_event(HostEvent(kind="plugin_crashed", plugin="p1", message="exited with status 3"))
    assert samples(render(m).decode()) == samples(generate_latest(m.registry()).decode())


def test_the_snapshot_gives_status_plain_numbers_per_plugin() -> None:
    m = HostMetrics()
    r = m.route("kit.echo", "kit")
    for _ in range(99):
        r.done(r.begin())
    r.failed(r.begin(), _Code())
    slow = r.begin()
    snap = m.snapshot(window=60.0)
    kit = snap["plugins"]["kit"]
    assert kit["calls"] == 100 and kit["errors"] == {"timeout": 1} and kit["in_flight"] == 1
    assert kit["calls_per_second"] is None  # a rate needs two readings
    for _ in range(10):
        r.done(r.begin())
    rate = m.snapshot(window=60.0)["plugins"]["kit"]["calls_per_second"]
    assert rate is not None and rate > 0
    assert 0 <= kit["p50_ms"] <= kit["p99_ms"]
    assert snap["uptime_seconds"] >= 0 and snap["clients"] is None
    r.done(slow)
    assert m.snapshot(window=60.0)["plugins"]["kit"]["in_flight"] == 0


def test_worker_and_swap_events_count_starts_crashes_restarts_swaps_and_rollbacks() -> None:
    m = HostMetrics()
    for ev in (
        HostEvent(kind="plugin_started", plugin="kit", version="1.0.0"),
        HostEvent(kind="plugin_crashed", plugin="kit", message="exited on signal SIGKILL"),
        HostEvent(kind="plugin_started", plugin="kit", version="1.0.0"),
        HostEvent(kind="plugin_replaced", plugin="kit", message="did not answer a ping"),
        HostEvent(kind="plugin_started", plugin="kit", version="1.0.0"),
        HostEvent(kind="plugin_swapped", plugin="kit", version="1.1.0", message="1.0.0"),
        HostEvent(kind="plugin_swapped", plugin="kit", version="1.0.0", message="1.1.0"),
    ):
        m.on_event(ev)
    assert m.starts == {"kit": 3}
    assert m.crashes == {("kit", "signal"): 1}
    assert m.restarts == {("kit", "signal"): 1, ("kit", "replaced"): 1}
    assert m.swaps == {"kit": 2} and m.rollbacks == {"kit": 1}


def test_crash_reasons_are_a_few_label_values() -> None:
    assert crash_reason("exited on signal SIGKILL") == "signal"
    assert crash_reason("exited with status 1") == "exit"
    assert crash_reason("did not answer a ping within 5s (hung)") == "hung"
    assert crash_reason("used 300 MiB of memory, over its limit of 256 MiB") == "limit"
    assert crash_reason("exited on signal SIGKILL (killed: out of memory)") == "signal"
    assert crash_reason("broke the wire protocol: it sent junk") == "protocol"
    assert crash_reason("something new") == "other"


def test_metrics_bind_only_loopback_unless_remote_is_allowed() -> None:
    assert parse_bind("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_bind(":0") == ("127.0.0.1", 0)
    assert parse_bind("0.0.0.0:9464", allow_remote=True) == ("0.0.0.0", 9464)
    with pytest.raises(ConfigError, match="not a loopback address"):
        parse_bind("0.0.0.0:9464")
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        parse_bind("9464")


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        body: bytes = resp.read()
    return body.decode()


def test_two_hosts_in_one_process_count_and_export_only_their_own_calls(
    make_host: Callable[..., Host],
    write_plugin_source: Callable[..., PluginSource],
    no_leftover_workers: None,
) -> None:
    trouble = write_plugin_source("trouble", TROUBLE)

    async def scenario() -> tuple[str, str]:
        async with make_host(sources=[trouble]) as a, make_host(sources=[trouble]) as b:
            la = MetricsListener(lambda: a, "127.0.0.1", 0)
            lb = MetricsListener(lambda: b, "127.0.0.1", 0)
            await la.start()
            await lb.start()
            try:
                for _ in range(3):
                    await a.call("trouble.ok")
                await b.call("trouble.ok")
                with pytest.raises(InvalidArguments):
                    await b.call("trouble.need", {"n": "x"})
                return (
                    await asyncio.to_thread(scrape, la.url),
                    await asyncio.to_thread(scrape, lb.url),
                )
            finally:
                await la.close()
                await lb.close()

    ta, tb = asyncio.run(scenario())
    ok = {"plugin": "trouble", "tool": "trouble.ok", "outcome": "ok"}
    bad = {"plugin": "trouble", "tool": "trouble.need", "outcome": "invalid_arguments"}
    assert value(ta, "mcphost_tool_calls_total", **ok) == 3
    assert value(tb, "mcphost_tool_calls_total", **ok) == 1
    assert value(ta, "mcphost_tool_calls_total", **bad) == 0
    assert value(tb, "mcphost_tool_calls_total", **bad) == 1
    assert value(ta, "mcphost_worker_starts_total", plugin="trouble") == 1
    assert value(tb, "mcphost_worker_starts_total", plugin="trouble") == 1


def test_a_host_with_metrics_off_counts_nothing_and_still_serves(
    make_host: Callable[..., Host],
    write_plugin_source: Callable[..., PluginSource],
    no_leftover_workers: None,
) -> None:
    trouble = write_plugin_source("trouble", TROUBLE)

    async def scenario() -> Any:
        host = make_host(sources=[trouble])
        host.metrics = None
        async with host:
            return await host.call("trouble.ok")

    assert asyncio.run(scenario()) == "ok"


def test_a_killed_worker_and_a_swap_move_their_counters_by_exactly_one(
    make_host: Callable[..., Host],
    write_plugin_source: Callable[..., PluginSource],
    no_leftover_workers: None,
) -> None:
    old = write_plugin_source("trouble", TROUBLE)
    new = write_plugin_source("trouble", TROUBLE, version="1.1.0")

    async def scenario() -> tuple[str, str]:
        async with make_host(sources=[old]) as host:
            crashed = asyncio.Event()
            host.add_listener(lambda e: crashed.set() if e.kind == "plugin_crashed" else None)
            before = render(host.metrics, host).decode() if host.metrics else ""
            pid = await host.call("trouble.pid")
            (stats,) = host.stats()
            os.kill(int(stats["pid"]), signal.SIGKILL)
            await asyncio.wait_for(crashed.wait(), 10)
            assert await host.call("trouble.pid") != pid
            assert await host.activate(new) == "1.0.0"
            assert host.metrics is not None
            return before, render(host.metrics, host).decode()

    before, after = asyncio.run(scenario())
    assert (
        value(after, "mcphost_worker_starts_total", plugin="trouble")
        == value(before, "mcphost_worker_starts_total", plugin="trouble") + 2
    )  # the restart, and the new version's worker
    assert value(after, "mcphost_worker_crashes_total", plugin="trouble", reason="signal") == 1
    assert value(after, "mcphost_worker_restarts_total", plugin="trouble", reason="signal") == 1
    assert value(after, "mcphost_registry_swaps_total", plugin="trouble") == 1
    assert value(after, "mcphost_registry_rollbacks_total", plugin="trouble") == 0
    assert value(after, "mcphost_registry_swap_duration_seconds_count") == 1
    assert (
        value(after, "mcphost_worker_state", plugin="trouble", version="1.1.0", state="running")
        == 1
    )


def test_operators_md_lists_every_metric_family_the_exporter_writes() -> None:
    repo = Path(__file__).resolve().parents[2]
    source = (repo / "host" / "observe" / "export.py").read_text(encoding="utf-8")
    docs = (repo / "docs" / "operators.md").read_text(encoding="utf-8")
    names = set(re.findall(r'"(mcphost_[a-z_]+)"', source))
    counters = set(re.findall(r"CounterMetricFamily\(\s*\"(mcphost_[a-z_]+)\"", source))
    counters |= set(re.findall(r"_counter\(\s*\"(mcphost_[a-z_]+)\"", source))
    written = {n + "_total" if n in counters else n for n in names}
    written.add("mcphost_tool_calls_total")
    written.discard("mcphost_tool_calls")
    monitoring = docs.split("## Monitoring", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(mcphost_[a-z_]+)`", monitoring, re.M))
    assert written == documented


def test_counting_calls_and_serving_stdio_never_import_prometheus_client(
    tmp_path: Path, write_plugin_source: Callable[..., PluginSource]
) -> None:
    trouble = write_plugin_source("trouble", TROUBLE)
    code = f"""
import asyncio, sys
import mcphost.host.cli.serve, mcphost.host.mcp.stdio, mcphost.host.cli.core
from mcphost.host import Host, HostConfig
from mcphost.host.sources import PluginSource

async def main():
    source = PluginSource(name="trouble", version="1.0.0", entry="trouble:plugin",
                          paths=[{trouble.paths[0]!r}], origin="directory",
                          root={trouble.root!r})
    async with Host({str(tmp_path / "home")!r}, config=HostConfig(allow_unsigned=True),
                    sources=[source], environment=False, registry=False) as host:
        assert await host.call("trouble.ok") == "ok"
        assert host.metrics.snapshot()["plugins"]["trouble"]["calls"] == 1

asyncio.run(main())
assert "prometheus_client" not in sys.modules, "prometheus_client was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
