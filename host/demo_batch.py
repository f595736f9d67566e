"""The batching act of ``mcphost demo``: 64 concurrent callers of ``mathkit.factorize``
with batching off and on (calls/s, p99, the batch sizes reached, the same answers), and
a high-priority call overtaking a queue of low-priority ones (docs/batching.md).

The settings change live (``Host.reconfigure``) and go back to what they were."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from .host import Host

__all__ = ["CALLERS", "TOOL", "batching_act"]

TOOL = "mathkit.factorize"
#: Concurrent callers in the off/on comparison, and the calls each makes per round.
CALLERS = 64
CALLS_EACH = 16
#: A prime whose factorisation takes a while (about 0.1 s): the batch that holds the
#: queue back carries three of it.
SLOW = 999_999_999_989
#: A prime that takes about 20 ms: the queued calls.
QUEUED = 100_000_000_003
LOW, HIGH, WAITING = 2, 0, 12


async def batching_act(p: Any, host: Host, ms: Callable[[float], str]) -> dict[str, Any]:
    """Compare batching off and on, then show a call overtaking a queue; returns the
    figures printed."""
    running = host.config
    figures: dict[str, Any] = {}
    try:
        p.step(f"batching: {CALLERS} concurrent callers of {TOOL}, one number per call")
        answers: list[list[Any]] = []
        for on in (False, True):
            _set(host, running, batching=on)
            rate, p99, got = await _round(host)
            answers.append(got)
            key = "on" if on else "off"
            figures[f"{key}_per_s"], figures[f"{key}_p99_s"] = rate, p99
            if on:
                snap = host.batching()[TOOL]
                figures["largest_batch"] = snap["largest_batch"]
                figures["mean_batch"] = snap["items"] / max(1, snap["batches"])
                shape = (
                    f"{snap['batches']:,} batch calls of up to {snap['largest_batch']} "
                    f"(mean {figures['mean_batch']:.1f})"
                )
            else:
                shape = "one worker call each"
            p.line(f"batching {key + ':':4} {rate:>8,.0f} calls/s, p99 {ms(p99)}; {shape}")
        figures["same_answers"] = answers[0] == answers[1]
        figures["speedup"] = figures["on_per_s"] / figures["off_per_s"]
        p.line(
            f"{figures['speedup']:.1f}x the calls/s with batching on; "
            + (
                "every caller got the same answer either way"
                if figures["same_answers"]
                else "ANSWERS DIFFER between off and on"
            )
        )
        figures.update(await _overtake(p, host, running, ms))
    finally:
        host.reconfigure(running)
    return figures


def _set(host: Host, base: Any, *, batching: bool = True, **settings: Any) -> None:
    features = base.features.model_copy(update={"batching": batching})
    update: dict[str, Any] = {"features": features}
    if settings:
        update["batching"] = base.batching.model_copy(update=settings)
    host.reconfigure(base.model_copy(update=update))


async def _round(host: Host) -> tuple[float, float, list[Any]]:
    """CALLERS callers, CALLS_EACH calls each: (calls/s, p99 seconds, the answers by
    number)."""
    total = CALLERS * CALLS_EACH
    numbers = iter(range(10_000, 10_000 + total))
    latencies: list[float] = []
    answers: dict[int, Any] = {}

    async def caller() -> None:
        for n in numbers:
            t0 = time.perf_counter()
            answers[n] = await host.call(TOOL, {"numbers": [n]})
            latencies.append(time.perf_counter() - t0)

    await host.call(TOOL, {"numbers": [2]})  # a running worker, and a batcher made
    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    rate = total / (time.perf_counter() - t0)
    latencies.sort()
    return rate, latencies[int(len(latencies) * 0.99)], [answers[n] for n in sorted(answers)]


async def _overtake(p: Any, host: Host, running: Any, ms: Callable[[float], str]) -> dict[str, Any]:
    """One batch at a time of at most 4: a slow batch runs, WAITING low-priority calls
    queue behind it, then one high-priority call comes; it leaves in the next batch."""
    _set(host, running, max_batch_size=4, max_in_flight=1)
    p.step(
        f"priorities: one batch at a time (max_in_flight 1, max_batch_size 4, applied live); "
        f"{WAITING} calls at priority {LOW} queue behind a running batch, then one at "
        f"priority {HIGH}"
    )
    await host.call(TOOL, {"numbers": [2]})
    batcher = host.batchers[TOOL]
    done: list[str] = []
    started = time.perf_counter()

    async def one(label: str, numbers: list[int], priority: int) -> float:
        await host.call(TOOL, {"numbers": numbers}, priority=priority)
        done.append(label)
        return time.perf_counter() - started

    blocker = asyncio.ensure_future(one("running", [SLOW] * 3, LOW))
    await asyncio.sleep(0)
    lows = [asyncio.ensure_future(one("low", [QUEUED], LOW)) for _ in range(WAITING)]
    while batcher.queued < WAITING and not blocker.done():
        await asyncio.sleep(0.001)
    high = asyncio.ensure_future(one("high", [QUEUED], HIGH))
    await asyncio.gather(blocker, high, *lows)
    after = done.index("high")
    overtaken = sum(1 for label in done[after + 1 :] if label == "low")
    high_s = high.result()
    last_low = max(t.result() for t in lows)
    p.line(
        f"the priority-{HIGH} call, sent last, was answered in {ms(high_s)}: before "
        f"{overtaken} of the {WAITING} priority-{LOW} calls queued ahead of it "
        f"(the last of them: {ms(last_low)})"
    )
    p.line("answer order: " + _runs(done))
    return {"overtaken": overtaken, "order": done}


def _runs(labels: list[str]) -> str:
    """``running, high, 12 low``: repeated labels counted."""
    out: list[str] = []
    i = 0
    while i < len(labels):
        j = i
        while j < len(labels) and labels[j] == labels[i]:
            j += 1
        out.append(labels[i] if j - i == 1 else f"{j - i} {labels[i]}")
        i = j
    return ", ".join(out)
