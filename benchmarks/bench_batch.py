"""Batching benchmarks: what coalescing calls to a batch tool gains, and what it costs
when there is nothing to coalesce.

- 64 concurrent callers of ``mathkit.factorize``, one number each, batching off against
  on: two hosts over the same plugin in alternating rounds; calls/s, p99 per call and
  the batch sizes reached (target: at least 2x the calls/s at an equal or better p99).
- One caller at a time: p50 with batching on against off (target: within 5 %).

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

from bench_core import async_latencies, install_examples, percentile, quiet_gc

Row = dict[str, Any]
CALLERS = 64
SPEEDUP_TARGET = 2.0
LOW_LOAD_TARGET = 0.05
TOOL = "mathkit.factorize"


def run(quick: bool) -> list[Row]:
    from mcphost.sandbox.loops import loop_factory

    tmp = Path(tempfile.mkdtemp(prefix="mcphost-bench-batch-"))
    try:
        plugins = install_examples(tmp)
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(_compare(quick, plugins, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _callers(host: Any, total: int) -> tuple[float, list[float]]:
    """``total`` calls by CALLERS concurrent callers: (calls/s, each call's seconds)."""
    numbers = iter(range(1_000, 1_000 + total))
    latencies: list[float] = []

    async def caller() -> None:
        for n in numbers:
            t0 = time.perf_counter()
            await host.call(TOOL, {"numbers": [n]})
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return total / (time.perf_counter() - t0), latencies


async def _compare(quick: bool, plugins: Any, tmp: Path) -> list[Row]:
    from mcphost.host import Home, Host, HostConfig

    rounds = 3 if quick else 7
    total = 2000 if quick else 20000
    single = 300 if quick else 3000
    hosts = []
    for on in (True, False):
        home = tmp / f"home-{on}"
        home.mkdir()
        if plugins.keys_dir is not None:
            shutil.copytree(plugins.keys_dir, Home(home).keys_dir)
        config = HostConfig(
            allow_unsigned=plugins.keys_dir is None,
            features={"batching": on},  # type: ignore[arg-type]
        )
        hosts.append(
            Host(
                home=home,
                config=config,
                plugin_dirs=[plugins.dirs["mathkit"]],
                environment=False,
                isolation="rlimits",
            )
        )
    rate: dict[bool, list[float]] = {True: [], False: []}
    p99: dict[bool, list[float]] = {True: [], False: []}
    p50_single: dict[bool, list[float]] = {True: [], False: []}
    async with hosts[0] as on_host, hosts[1] as off_host:
        by = {True: on_host, False: off_host}
        for host in by.values():
            await _callers(host, 500)
        for r in range(rounds):
            # Alternate which goes first so drift in the machine falls on both alike.
            for on in (True, False) if r % 2 == 0 else (False, True):
                with quiet_gc():
                    got, lat = await _callers(by[on], total)
                rate[on].append(got)
                p99[on].append(percentile(lat, 99))
                with quiet_gc():
                    one = await async_latencies(
                        lambda h=by[on]: h.call(TOOL, {"numbers": [1_009]}), single
                    )
                p50_single[on].append(statistics.median(one))
        stats = on_host.batching().get(TOOL, {})
    speedup = statistics.median(a / b for a, b in zip(rate[True], rate[False], strict=True))
    p99_ratio = statistics.median(a / b for a, b in zip(p99[True], p99[False], strict=True))
    low = statistics.median(
        a / b - 1 for a, b in zip(p50_single[True], p50_single[False], strict=True)
    )
    mean_batch = stats.get("items", 0) / max(1, stats.get("batches", 0))
    return [
        {
            "name": f"{CALLERS} callers of {TOOL}: batching on vs off",
            "value": round(speedup, 2),
            "unit": "x calls/s",
            "on": f"{statistics.median(rate[True]):,.0f} calls/s",
            "off": f"{statistics.median(rate[False]):,.0f} calls/s",
            "target": f">= {SPEEDUP_TARGET:g}x",
            "passed": speedup >= SPEEDUP_TARGET and p99_ratio <= 1.0,
            "n": rounds * total * 2,
        },
        {
            "name": f"{CALLERS} callers: p99 per call, batching on / off",
            "value": round(p99_ratio, 2),
            "unit": "x",
            "on": f"{statistics.median(p99[True]) * 1e3:.2f} ms",
            "off": f"{statistics.median(p99[False]) * 1e3:.2f} ms",
            "target": "<= 1x",
            "passed": p99_ratio <= 1.0,
            "n": rounds * total * 2,
        },
        {
            "name": "batch sizes reached (batching on)",
            "value": round(mean_batch, 1),
            "unit": "items per batch (mean)",
            "largest": stats.get("largest_batch", 0),
            "reasons": stats.get("reasons", {}),
            "n": stats.get("batches", 0),
        },
        {
            "name": "one caller at a time: p50 batching on vs off",
            "value": round(low * 100, 2),
            "unit": "% slower",
            "on": f"{statistics.median(p50_single[True]) * 1e6:.1f} µs",
            "off": f"{statistics.median(p50_single[False]) * 1e6:.1f} µs",
            "target": f"<= {LOW_LOAD_TARGET * 100:g} %",
            "passed": low <= LOW_LOAD_TARGET,
            "n": rounds * single * 2,
        },
    ]


if __name__ == "__main__":
    for row in run("--quick" in sys.argv):
        print(row)
