"""Ray-hosted workers against local ones: what the actor's relay and the TCP hop cost.

Two hosts over the same signed ``mathkit`` installed in one registry, one with the
plugin placed locally, one with ``placement = "ray"`` on a local Ray cluster of 2 CPUs
started here, measured in alternating rounds:

- ``mathkit.add`` one call at a time (p50, p99) and with 16 in flight (calls/s);
- ``mathkit.spin`` of 10 ms one call at a time (p50).

Then a CPU-bound load spread over Ray workers: ``mathkit.is_prime`` of a 13-digit prime
(a fixed amount of trial division, tens of ms; not ``spin``, which waits for a clock
and so overlaps in a worker's threads) with 8 calls in flight, on one Ray worker
process and on two (``replicas = 1`` and ``2``, all on Ray), in alternating rounds:
calls/s of each and the speed-up. A worker's tools share its process's interpreter
lock, so one worker uses one core at most; the speed-up is bounded by the cores the
cluster's node really has free (run.py's summary says on what machine and load).

Both run under the rlimits backend, so the difference is the path, not the jail. Needs
``pip install 'mcphost[ray]'``; ``run(quick)`` returns the rows for benchmarks/run.py.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_core import async_latencies, async_pipelined, percentile

Row = dict[str, Any]
EXAMPLES = Path(__file__).resolve().parents[1] / "example_plugins"
INFLIGHT = 16
#: The CPU-bound load: is_prime of this prime (trial division up to its square root),
#: with this many calls in flight.
PRIME = 1_000_000_000_039
CPU_INFLIGHT = 8


def run(quick: bool) -> list[Row]:
    import ray

    from mcphost.sandbox.loops import loop_factory

    tmp = Path(tempfile.mkdtemp(prefix="mcphost-bench-ray-"))
    started = not ray.is_initialized()
    try:
        home = _install_mathkit(tmp)
        if started:
            ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            rows = runner.run(_compare(quick, home))
            return rows + runner.run(_spread(quick, home))
    finally:
        if started:
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def _install_mathkit(tmp: Path) -> Path:
    from mcphost.host import Home
    from mcphost.registry import Registry
    from mcphost.security import Permissions, TrustStore, generate_key, sign_wheel

    raw = tmp / "wheels"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"),
            *("-w", str(raw), str(EXAMPLES / "mathkit")),
        ],
        check=True,
        capture_output=True,
    )
    key = generate_key()
    wheel = sign_wheel(next(raw.glob("*.whl")), key, permissions=Permissions(), out=tmp / "signed")
    home = Home(tmp / "home").ensure()
    TrustStore(home.keys_dir).trust(key.public_key.pem(), "bench")
    with Registry.open(home) as reg:
        reg.install(reg.check(wheel), activate=True)
    return tmp / "home"


def _host(home: Path, placement: str, **settings: Any) -> Any:
    from mcphost.host import Host, HostConfig

    plugin = {"placement": placement, "num_cpus": 1, **settings}
    config = HostConfig(
        isolation="rlimits",
        plugins={"mathkit": plugin},  # type: ignore[dict-item]
        cluster={"address": "auto"},  # type: ignore[arg-type]
    )
    return Host(home, config=config, environment=False, status=False, metrics=False)


async def _compare(quick: bool, home: Path) -> list[Row]:
    rounds = 3 if quick else 7
    n = 200 if quick else 1000
    spins = 20 if quick else 100
    add: dict[str, list[float]] = {"local": [], "ray": []}
    p50s: dict[str, list[float]] = {"local": [], "ray": []}
    rates: dict[str, list[float]] = {"local": [], "ray": []}
    spin: dict[str, list[float]] = {"local": [], "ray": []}
    async with _host(home, "local") as local, _host(home, "ray") as remote:
        hosts = {"local": local, "ray": remote}
        for h in hosts.values():  # start the workers (and the actor) before measuring
            await h.call("mathkit.add", {"a": 1, "b": 2})
        for _ in range(rounds):
            for name, h in hosts.items():
                call = _caller(h, "mathkit.add", {"a": 1, "b": 2})
                samples = await async_latencies(call, n)
                add[name] += samples
                p50s[name].append(percentile(samples, 50))
                rates[name].append(await async_pipelined(call, n, INFLIGHT))
                spin_call = _caller(h, "mathkit.spin", {"microseconds": 10_000})
                spin[name].append(percentile(await async_latencies(spin_call, spins), 50))
    med = statistics.median
    rows: list[Row] = []
    for name in ("local", "ray"):
        rows.append(
            {
                "name": f"mathkit.add, {name} worker, one at a time: p50",
                "value": round(med(p50s[name]) * 1e3, 3),
                "unit": "ms",
                "note": f"p99 {percentile(add[name], 99) * 1e3:.3f} ms",
            }
        )
    for name in ("local", "ray"):
        rows.append(
            {
                "name": f"mathkit.add, {name} worker, {INFLIGHT} in flight",
                "value": round(med(rates[name])),
                "unit": "calls/s",
            }
        )
    for name in ("local", "ray"):
        rows.append(
            {
                "name": f"mathkit.spin(10 ms), {name} worker: p50",
                "value": round(med(spin[name]) * 1e3, 3),
                "unit": "ms",
            }
        )
    rows.append(
        {
            "name": "Ray-hosted over local, no-op p50",
            "value": round(med(p50s["ray"]) / med(p50s["local"]), 2),
            "unit": "x",
            "note": f"{rounds} rounds of {n} calls, measured {time.strftime('%Y-%m-%d')}",
        }
    )
    return rows


def _caller(host: Any, tool: str, args: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
    def call() -> Awaitable[Any]:
        return host.call(tool, args)  # type: ignore[no-any-return]

    return call


async def _spread(quick: bool, home: Path) -> list[Row]:
    """The CPU-bound load on 1 and on 2 Ray worker processes (see the module docstring).
    Each worker reserves half a Ray CPU so that both hosts (three workers) fit on the
    2-CPU cluster at once and the rounds can alternate."""
    rounds = 2 if quick else 5
    calls = 40 if quick else 200
    rates: dict[int, list[float]] = {1: [], 2: []}
    async with (
        _host(home, "ray", num_cpus=0.5, replicas=1) as one,
        _host(home, "ray", num_cpus=0.5, replicas=2) as two,
    ):
        hosts = {1: one, 2: two}
        for h in hosts.values():
            await h.call("mathkit.add", {"a": 1, "b": 2})
        await _all_running(two)
        one_call = _caller(one, "mathkit.is_prime", {"n": PRIME})
        alone = percentile(await async_latencies(one_call, 5 if quick else 20), 50)
        for _ in range(rounds):
            for workers, h in hosts.items():
                call = _caller(h, "mathkit.is_prime", {"n": PRIME})
                rates[workers].append(await async_pipelined(call, calls, CPU_INFLIGHT))
    med = statistics.median
    rows: list[Row] = [
        {
            "name": f"mathkit.is_prime({PRIME}), {CPU_INFLIGHT} in flight, "
            f"{workers} Ray worker{'s' if workers > 1 else ''}",
            "value": round(med(rates[workers]), 1),
            "unit": "calls/s",
            "note": f"{workers / alone:.1f} calls/s if each worker had a core "
            f"(one call alone: {alone * 1e3:.1f} ms)",
        }
        for workers in (1, 2)
    ]
    rows.append(
        {
            "name": "CPU-bound load, 2 Ray workers over 1",
            "value": round(med(rates[2]) / med(rates[1]), 2),
            "unit": "x",
            "note": f"{rounds} rounds of {calls} calls on a node of {_cores()} cores",
        }
    )
    return rows


async def _all_running(host: Any, timeout: float = 60.0) -> None:
    """Wait until every replica of mathkit has its worker (the pool starts them all)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = next(s for s in host.stats() if s["plugin"] == "mathkit")
        if all(r["state"] == "running" for r in stats.get("replicas") or [stats]):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the replicas of mathkit did not all start: {stats}")
        await asyncio.sleep(0.05)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))
