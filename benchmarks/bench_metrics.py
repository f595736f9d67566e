"""Metrics benchmarks: what counting costs a call, and how fast /metrics answers.

- ``host.call`` no-op p50 and pipelined calls/s with metrics on against metrics off, in
  the same run: two hosts over the same plugin, measured in alternating rounds; the
  cost is the median over rounds of on/off - 1 (target: at most 3 %).
- ``/metrics`` text for 50 plugins and 500 tools, each tool with calls and errors
  counted (built from the plain structures, no workers): target under 50 ms.

``run(quick)`` returns the rows for benchmarks/run.py.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_core import (
    async_latencies,
    async_pipelined,
    install_examples,
    quiet_gc,
)

Row = dict[str, Any]
COST_TARGET = 0.03
SCRAPE_TARGET_MS = 50.0


def run(quick: bool) -> list[Row]:
    from mcphost.sandbox.loops import loop_factory

    tmp = Path(tempfile.mkdtemp(prefix="mcphost-bench-metrics-"))
    try:
        plugins = install_examples(tmp)
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            rows = runner.run(_call_cost(quick, plugins, tmp))
        rows += _scrape_rows(quick)
        return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _call_cost(quick: bool, plugins: Any, tmp: Path) -> list[Row]:
    from mcphost.host import Home, Host, HostConfig

    rounds = 3 if quick else 9
    calls = 300 if quick else 3000
    piped = 600 if quick else 10000
    config = HostConfig(allow_unsigned=plugins.keys_dir is None)
    hosts = []
    for on in (True, False):
        home = tmp / f"home-{on}"
        home.mkdir()
        if plugins.keys_dir is not None:
            shutil.copytree(plugins.keys_dir, Home(home).keys_dir)
        hosts.append(
            Host(
                home=home,
                config=config,
                plugin_dirs=[plugins.dirs["textkit"]],
                environment=False,
                isolation="rlimits",
                metrics=on,
            )
        )
    args = {"text": "x"}
    p50: dict[bool, list[float]] = {True: [], False: []}
    rate: dict[bool, list[float]] = {True: [], False: []}
    async with hosts[0] as on_host, hosts[1] as off_host:
        by = {True: on_host, False: off_host}
        for host in by.values():
            await async_latencies(lambda h=host: h.call("textkit.echo", args), 300)
        for r in range(rounds):
            # Alternate which goes first so drift in the machine falls on both alike.
            for on in (True, False) if r % 2 == 0 else (False, True):
                host = by[on]
                with quiet_gc():
                    got = await async_latencies(lambda h=host: h.call("textkit.echo", args), calls)
                p50[on].append(statistics.median(got))
                with quiet_gc():
                    rate[on].append(
                        await async_pipelined(lambda h=host: h.call("textkit.echo", args), piped)
                    )
    lat_cost = statistics.median(a / b - 1 for a, b in zip(p50[True], p50[False], strict=True))
    rate_cost = statistics.median(1 - a / b for a, b in zip(rate[True], rate[False], strict=True))
    return [
        {
            "name": "host.call no-op p50: metrics on vs off",
            "value": round(lat_cost * 100, 2),
            "unit": "% slower",
            "on": f"{statistics.median(p50[True]) * 1e6:.1f} µs",
            "off": f"{statistics.median(p50[False]) * 1e6:.1f} µs",
            "target": f"<= {COST_TARGET * 100:g} %",
            "passed": lat_cost <= COST_TARGET,
            "n": rounds * calls * 2,
        },
        {
            "name": "pipelined host.call: metrics on vs off",
            "value": round(rate_cost * 100, 2),
            "unit": "% fewer calls/s",
            "on": f"{statistics.median(rate[True]):,.0f} calls/s",
            "off": f"{statistics.median(rate[False]):,.0f} calls/s",
            "target": f"<= {COST_TARGET * 100:g} %",
            "passed": rate_cost <= COST_TARGET,
            "n": rounds * piped * 2,
        },
    ]


class _Failed(Exception):
    code = "timeout"


def synthetic(plugins: int = 50, tools: int = 10, calls: int = 20) -> Any:
    """HostMetrics with ``plugins`` x ``tools`` tools, each with ok and failed calls."""
    from mcphost.host.observe import HostMetrics

    m = HostMetrics()
    for p in range(plugins):
        for t in range(tools):
            r = m.route(f"plugin{p}.tool{t}", f"plugin{p}")
            for _ in range(calls):
                r.done(r.begin())
            r.failed(r.begin(), _Failed())
    return m


def _scrape_rows(quick: bool) -> list[Row]:
    from mcphost.host.observe.export import render

    m = synthetic()
    render(m)  # the first scrape makes each tool's label text once
    times = []
    for _ in range(5 if quick else 30):
        t0 = time.perf_counter()
        body = render(m)
        times.append(time.perf_counter() - t0)
    p50 = statistics.median(times) * 1000
    return [
        {
            "name": "/metrics text, 50 plugins and 500 tools",
            "value": round(p50, 2),
            "unit": "ms p50",
            "p99": f"{max(times) * 1000:.2f} ms",
            "bytes": len(body),
            "target": f"< {SCRAPE_TARGET_MS:g} ms",
            "passed": p50 < SCRAPE_TARGET_MS,
            "n": len(times),
        }
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
