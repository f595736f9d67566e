"""Batching benchmarks: what coalescing calls to a batch tool gains, and what it costs
when there is nothing to coalesce.

- 64 concurrent callers of ``mathkit.factorize``, one number each, batching off against
  on: two hosts over the same plugin in alternating rounds; calls/s, p99 per call and
  the batch sizes reached (target: at least 2x the calls/s at an equal or better p99).
- The same with ``max_batch_size`` 64: batches that may hold every caller, which a
  closed loop of callers must still split into batches that alternate (the ``balance``
  rule, docs/batching.md).
- One caller at a time: p50 with batching on against off (target: within 5 %).
- Priorities: 4 callers at priority 0 alone, then beside low-priority (priority 2)
  callers rising to 10x as many; the high-priority p99 against its unloaded value
  (target: at most 1.5x at 10x). The low calls yield to the high ones (short batches,
  a slot kept free: ``priority_window``, docs/batching.md).
- Replicas: ``mathkit.spin`` (CPU-bound, 2 ms a call) by 8 callers with 1 and 2
  replicas; the calls/s ratio (this machine has 2 cores, shared).
- Adaptive against fixed ``max_batch_size`` (64, with and without a
  ``target_latency``) under a load that steps between 4 and 64 callers; p99 and calls/s
  of each.

``run(quick)`` returns the rows for benchmarks/run.py.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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
            rows = runner.run(_compare(quick, plugins, tmp))
            rows += runner.run(_compare_unbounded(quick, plugins, tmp))
            rows += runner.run(_priorities(quick, plugins, tmp))
            rows += runner.run(_replicas(quick, plugins, tmp))
            rows += runner.run(_adaptive(quick, plugins, tmp))
        load = os.getloadavg()
        for row in rows:
            row.setdefault("note", "")
            row["note"] = (
                row["note"]
                + ("; " if row["note"] else "")
                + f"load average {load[0]:.2f} after (2 cores, shared)"
            )
        return rows
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


async def _compare_unbounded(quick: bool, plugins: Any, tmp: Path) -> list[Row]:
    """The same comparison with batches that may hold every caller (max_batch_size 64):
    a closed loop of callers that must still settle into batches that alternate."""
    rows = await _compare(quick, plugins, tmp, batching={"max_batch_size": CALLERS})
    speed, _, sizes, _ = rows
    speed["name"] = f"{CALLERS} callers, max_batch_size {CALLERS}: batching on vs off"
    del speed["target"], speed["passed"]  # a figure, not one of the targets
    sizes["name"] = f"batch sizes reached (max_batch_size {CALLERS})"
    return [speed, sizes]


async def _compare(
    quick: bool, plugins: Any, tmp: Path, batching: dict[str, Any] | None = None
) -> list[Row]:
    from mcphost.host import Home, Host, HostConfig

    rounds = 3 if quick else 7
    total = 2000 if quick else 20000
    single = 300 if quick else 3000
    hosts = []
    for on in (True, False):
        home = tmp / f"home-{on}-{len(batching or ())}"
        home.mkdir()
        if plugins.keys_dir is not None:
            shutil.copytree(plugins.keys_dir, Home(home).keys_dir)
        config = HostConfig(
            allow_unsigned=plugins.keys_dir is None,
            features={"batching": on},  # type: ignore[arg-type]
            batching=batching or {},  # type: ignore[arg-type]
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


def _host(installed: Any, tmp: Path, name: str, **config: Any) -> Any:
    """A host of the example mathkit in its own home under ``tmp``."""
    from mcphost.host import Home, Host, HostConfig

    home = tmp / f"home-{name}"
    home.mkdir()
    if installed.keys_dir is not None:
        shutil.copytree(installed.keys_dir, Home(home).keys_dir)
    return Host(
        home=home,
        config=HostConfig(allow_unsigned=installed.keys_dir is None, **config),
        plugin_dirs=[installed.dirs["mathkit"]],
        environment=False,
        isolation="rlimits",
    )


async def _take(
    host: Any,
    numbers: Iterator[int],
    args: Callable[[int], dict[str, Any]],
    latencies: list[float],
    priority: int | None = None,
    tool: str = TOOL,
) -> None:
    """One caller: calls ``tool`` with ``args(i)`` for each ``i`` it takes from
    ``numbers`` (shared by the callers), one at a time; each call's seconds."""
    for i in numbers:
        t0 = time.perf_counter()
        await host.call(tool, args(i), priority=priority)
        latencies.append(time.perf_counter() - t0)


def _is_prime(n: int) -> bool:
    """Miller-Rabin with the bases that decide every n below 3.4 * 10^14."""
    if n < 2:
        return False
    bases = (2, 3, 5, 7, 11, 13, 17)
    if n in bases:
        return True
    if any(n % b == 0 for b in bases):
        return False
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for b in bases:
        x = pow(b, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _primes(start: int, count: int) -> list[int]:
    """``count`` primes from ``start`` on: factorize tries every divisor up to the
    square root of a prime, so each costs a known time (a composite ends early)."""
    out: list[int] = []
    n = start
    while len(out) < count:
        if _is_prime(n):
            out.append(n)
        n += 1
    return out


#: Primes whose factorisation costs about 0.1 ms (sqrt about 1,000 divisions).
_MID = _primes(1_000_000, 64)
#: Primes whose factorisation costs about 1 ms (sqrt about 10,000 divisions).
_SLOW = _primes(100_000_000, 64)


async def _closed_loop(
    host: Any, callers: int, stop: asyncio.Event, priority: int, args: Any
) -> list[float]:
    """``callers`` callers calling until ``stop``; each call's seconds."""
    latencies: list[float] = []

    async def caller(k: int) -> None:
        for i in itertools.count(k, callers):
            if stop.is_set():
                return
            t0 = time.perf_counter()
            await host.call(TOOL, args(i), priority=priority)
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(caller(k) for k in range(callers)))
    return latencies


async def _priorities(quick: bool, plugins: Any, tmp: Path) -> list[Row]:
    """High-priority p99 with low-priority load rising to 10x, against it alone."""
    high_callers, calls = 4, 150 if quick else 1500
    levels = (0, 1, 4, 10)
    mid = _MID

    def args(i: int) -> dict[str, Any]:
        return {"numbers": [mid[i % len(mid)]]}

    p99: dict[int, float] = {}
    async with _host(plugins, tmp, "priorities") as host:
        await host.call(TOOL, {"numbers": [2]})
        for level in levels:
            stop = asyncio.Event()
            low = asyncio.ensure_future(_closed_loop(host, high_callers * level, stop, 2, args))
            await asyncio.sleep(0.05 if level else 0)  # the low load is running
            numbers = iter(range(calls))
            latencies: list[float] = []
            with quiet_gc():
                await asyncio.gather(
                    *(_take(host, numbers, args, latencies, 0) for _ in range(high_callers))
                )
            stop.set()
            await low
            p99[level] = percentile(latencies, 99)
    rows = []
    for level in levels[1:]:
        ratio = p99[level] / p99[0]
        row: Row = {
            "name": f"priority 0 p99 with {level}x as many priority-2 callers, vs alone",
            "value": round(ratio, 2),
            "unit": "x",
            "loaded": f"{p99[level] * 1e3:.2f} ms",
            "alone": f"{p99[0] * 1e3:.2f} ms",
            "n": calls,
            "note": f"{high_callers} high-priority callers, {high_callers * level} low",
        }
        if level == levels[-1]:
            row["target"] = "<= 1.5x"
            row["passed"] = ratio <= 1.5
        rows.append(row)
    return rows


async def _replicas(quick: bool, plugins: Any, tmp: Path) -> list[Row]:
    """A CPU-bound tool by 8 callers, with 1 and 2 replicas."""
    callers, total, micros = 8, 300 if quick else 3000, 2000
    rate: dict[int, list[float]] = {1: [], 2: []}

    def spin(i: int) -> dict[str, Any]:
        return {"microseconds": micros}

    hosts = {
        n: _host(plugins, tmp, f"replicas-{n}", plugins={"mathkit": {"replicas": n}})
        for n in (1, 2)
    }
    async with hosts[1] as one, hosts[2] as two:
        by = {1: one, 2: two}
        for host in by.values():  # every replica running
            await asyncio.gather(
                *(host.call("mathkit.spin", {"microseconds": 1}) for _ in range(8))
            )
        for r in range(1 if quick else 3):
            for n in (1, 2) if r % 2 == 0 else (2, 1):
                numbers = iter(range(total))
                spent: list[float] = []
                t0 = time.perf_counter()
                await asyncio.gather(
                    *(
                        _take(by[n], numbers, spin, spent, tool="mathkit.spin")
                        for _ in range(callers)
                    )
                )
                rate[n].append(total / (time.perf_counter() - t0))
    one_rate, two_rate = statistics.median(rate[1]), statistics.median(rate[2])
    return [
        {
            "name": f"mathkit.spin ({micros / 1000:g} ms of CPU) by {callers} callers: "
            "2 replicas vs 1",
            "value": round(two_rate / one_rate, 2),
            "unit": "x calls/s",
            "one": f"{one_rate:,.0f} calls/s",
            "two": f"{two_rate:,.0f} calls/s",
            "n": total * len(rate[1]) * 2,
            "note": "ideal 2x on 2 idle cores",
        }
    ]


async def _adaptive(quick: bool, plugins: Any, tmp: Path) -> list[Row]:
    """Calls under a load stepping 4 -> 64 -> 4 -> 64 -> 4 callers, with batches of up
    to 64 fixed, and adaptive (target_latency 20 ms)."""
    steps = (4, 64, 4, 64, 4)
    per_step = 200 if quick else 2000
    slow = _SLOW

    def args(i: int) -> dict[str, Any]:
        return {"numbers": [slow[i % len(slow)]]}

    kinds = {
        "fixed": {"max_batch_size": 64},
        "adaptive": {"max_batch_size": 64, "target_latency": 0.02},
    }
    hosts = {k: _host(plugins, tmp, f"adaptive-{k}", batching=v) for k, v in kinds.items()}
    figures: dict[str, tuple[float, float, int]] = {}
    async with hosts["fixed"] as fixed, hosts["adaptive"] as adaptive:
        by = {"fixed": fixed, "adaptive": adaptive}
        for kind, host in by.items():
            await host.call(TOOL, {"numbers": [2]})
            latencies: list[float] = []
            t0 = time.perf_counter()
            done = 0
            for callers in steps:
                numbers = iter(range(done, done + per_step))
                with quiet_gc():
                    await asyncio.gather(
                        *(_take(host, numbers, args, latencies) for _ in range(callers))
                    )
                done += per_step
            rate = done / (time.perf_counter() - t0)
            largest = host.batching()[TOOL]["largest_batch"]
            figures[kind] = (percentile(latencies, 99), rate, largest)
    rows: list[Row] = []
    for kind in kinds:
        p99, rate, largest = figures[kind]
        rows.append(
            {
                "name": f"load stepping {'-'.join(map(str, steps))} callers, "
                f"{'adaptive (target_latency 20 ms)' if kind == 'adaptive' else 'fixed'} "
                "max_batch_size 64",
                "value": round(p99 * 1e3, 2),
                "unit": "ms p99",
                "calls/s": f"{rate:,.0f}",
                "largest": largest,
                "n": per_step * len(steps),
            }
        )
    fixed_p99, adaptive_p99 = figures["fixed"][0], figures["adaptive"][0]
    rows.append(
        {
            "name": "adaptive vs fixed under the stepping load: p99 and calls/s",
            "value": round(adaptive_p99 / fixed_p99, 2),
            "unit": "x p99",
            "calls/s": f"{figures['adaptive'][1] / figures['fixed'][1]:.2f}x",
            "n": per_step * len(steps) * 2,
        }
    )
    return rows


if __name__ == "__main__":
    for row in run("--quick" in sys.argv):
        print(row)
