"""Parts of bench_core that move data: payloads from 100 B to 10 MB, and long streams.

Payloads: ``host.call("textkit.echo", {"text": s})`` sends ``s`` to the worker and gets
it back; the raw floor's server does the same with the same frames and no framework.
Streams: a million items from an async generator (``textkit.count_to``) and from a
sync generator (``textkit.tokens`` over a text of that many words), with the peak
resident memory of the host's process and of the worker while they run.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from bench_core import (
    Plan,
    RawFloor,
    Row,
    async_latencies,
    median,
    ms,
    quiet_gc,
    spread,
    times,
    us,
)

#: Payload sizes, in bytes, each way.
PAYLOAD_SIZES = (100, 10_000, 1_000_000, 10_000_000)
#: host.call p50 at every payload size, against the raw floor's at the same size.
PAYLOAD_TARGET = 1.4
#: Items per second, by the kind of generator.
STREAM_TARGETS = {"async": 300_000, "sync": 150_000}


def size_label(size: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("KB", 1_000)):
        if size >= scale:
            return f"{size // scale} {unit}"
    return f"{size} B"


def _latency(values: list[float]) -> str:
    """The median of per-round latencies and their range, all in µs or all in ms."""
    return spread(values, ms if median(values) >= 1e-3 else us)


async def payload_rows(plan: Plan, host: Any, raw: RawFloor, where: str) -> list[Row]:
    """host.call with ``size`` bytes each way against the raw floor with the same."""
    rows: list[Row] = []
    for size in PAYLOAD_SIZES:
        text = "x" * size
        n = plan.payload_calls[size]

        async def call(t: str = text) -> Any:
            return await host.call("textkit.echo", {"text": t})

        await async_latencies(call, 2)  # warm: buffers, the worker's inline choice
        raw.latencies(2, text=text)
        h: list[float] = []
        r: list[float] = []
        for _ in range(plan.rounds):
            with quiet_gc():
                h.append(median(await async_latencies(call, n)))
            with quiet_gc():
                r.append(median(raw.latencies(n, text=text)))
        ratios = [a / b for a, b in zip(h, r, strict=True)]
        rows.append(
            {
                "name": f"[{where}] payload of {size_label(size)} each way: host.call "
                "textkit.echo vs raw floor",
                "value": median(ratios),
                "unit": "x raw floor p50",
                "p50": _latency(h),
                "raw floor p50": _latency(r),
                "vs raw floor": spread(ratios, times),
                "n": n * plan.rounds,
                "target": f"<= {PAYLOAD_TARGET:g}x",
                "passed": median(ratios) <= PAYLOAD_TARGET,
            }
        )
    return rows


def reset_peak_rss(pid: int) -> bool:
    """Start ``pid``'s peak resident size afresh (Linux: clear_refs 5); False if not."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss(pid: int) -> float:
    """``pid``'s peak resident size in bytes (VmHWM), NaN where unknown."""
    with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024.0
    return float("nan")


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


async def stream_rows(plan: Plan, host: Any, where: str) -> list[Row]:
    """Items per second of a long stream from each kind of generator, and peak RSS."""
    n = plan.stream_items
    kinds = {
        "async": ("textkit.count_to", {"n": n}),
        "sync": ("textkit.tokens", {"text": "x " * n}),
    }
    rows: list[Row] = []
    for kind, (tool, args) in kinds.items():
        warm = {"n": 100} if kind == "async" else {"text": "x " * 100}
        async for _ in host.stream(tool, warm):
            pass
        worker = host._supervisors["textkit"].worker
        rates: list[float] = []
        host_peaks: list[float] = []
        worker_peaks: list[float] = []
        reset = True
        for _ in range(plan.stream_rounds):
            reset &= reset_peak_rss(os.getpid()) and reset_peak_rss(worker.pid)
            count = 0
            with quiet_gc():
                t0 = time.perf_counter()
                async for _ in host.stream(tool, args):
                    count += 1
                took = time.perf_counter() - t0
            if count != n:
                raise RuntimeError(f"{tool} streamed {count} items instead of {n}")
            rates.append(n / took)
            host_peaks.append(peak_rss(os.getpid()))
            worker_peaks.append(peak_rss(worker.pid))
        target = STREAM_TARGETS[kind]
        row: Row = {
            "name": f"[{where}] stream of {n:,} items from {'an' if kind == 'async' else 'a'} "
            f"{kind} generator ({tool})",
            "value": median(rates),
            "unit": "items/s",
            "items/s": spread(rates, lambda v: f"{v:,.0f}"),
            "host peak RSS": spread(host_peaks, _mb),
            "worker peak RSS": spread(worker_peaks, _mb),
            "n": plan.stream_rounds,
            "target": f">= {target:,} items/s",
            "passed": median(rates) >= target,
        }
        if not reset:
            row["note"] = "peak RSS since each process started (clear_refs refused)"
        rows.append(row)
    return rows
