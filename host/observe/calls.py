"""Counting calls into plain structures: the only metric work on a call's path.

A :class:`RouteStats` per ``<plugin>.<tool>`` is made once and cached by name; a call
then costs one dictionary lookup, a few integer adds, one ``bisect`` into the bucket
bounds and one write into a small ring of recent durations. Nothing here imports
``prometheus_client``: families are built from these structures only when scraped.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left, bisect_right
from typing import Any

__all__ = [
    "BUCKETS",
    "RECENT",
    "PluginCalls",
    "RouteStats",
    "clock",
    "percentile",
    "plugin_snapshot",
]

#: Upper bounds (seconds) of the call duration histogram: the OpenTelemetry MCP
#: semantic conventions' boundaries for ``mcp.server.operation.duration``, with finer
#: ones below 10 ms where a sandboxed call usually lands.
BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
#: How many recent calls of a route are kept for calls/s and percentiles (a power of 2).
RECENT = 256
_MASK = RECENT - 1
#: The clock of call durations: a start time given to :class:`RouteStats` is one of its
#: readings (a batcher that counts its calls keeps its times on it too).
clock = time.perf_counter
_now = clock


class PluginCalls:
    """What a plugin's routes share: the (time, total calls) samples taken when someone
    reads calls/s (a reader's own clock, never a call's)."""

    __slots__ = ("plugin", "routes", "samples")

    def __init__(self, plugin: str) -> None:
        self.plugin = plugin
        self.routes: list[RouteStats] = []
        self.samples: list[tuple[float, int]] = []

    @property
    def in_flight(self) -> int:
        """Calls of the plugin's routes begun and not yet ended."""
        return sum(r.begun - r.ended for r in list(self.routes))


class RouteStats:
    """Totals, a duration histogram and the durations of the recent calls of one tool.

    A call's path touches as little as it can: :meth:`begin` one add, :meth:`done` the
    counts, the histogram and the ring of recent durations, whose write index is the
    count of calls ended (the plugin's calls in flight are derived when read). The
    calls of a batch tool are counted by its batcher: a batch's answered calls at once
    (:meth:`answered`), when their results are handed out."""

    __slots__ = ("begun", "buckets", "ended", "errors", "ok", "owner", "recent", "sum", "tool")

    def __init__(self, tool: str, owner: PluginCalls) -> None:
        self.tool = tool
        self.owner = owner
        #: Calls begun, and calls ended (either way).
        self.begun = 0
        self.ended = 0
        self.ok = 0
        #: Stable error code (or "cancelled") -> calls that ended with it.
        self.errors: dict[str, int] = {}
        self.sum = 0.0
        #: Non-cumulative counts per bucket of :data:`BUCKETS`, the last one for +Inf.
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.recent = [-1.0] * RECENT

    def begin(self) -> float:
        """A call starts: returns its start time for :meth:`done` / :meth:`failed`."""
        self.begun += 1
        return _now()

    def done(self, t0: float) -> None:
        """The call started at ``t0`` returned a result."""
        d = _now() - t0
        self.ok += 1
        self.sum += d
        self.buckets[bisect_left(BUCKETS, d)] += 1
        i = self.ended
        self.recent[i & _MASK] = d
        self.ended = i + 1

    def failed(self, t0: float, exc: BaseException) -> None:
        """The call started at ``t0`` raised ``exc`` (counted under its stable code)."""
        code = getattr(exc, "code", None)
        key = code if isinstance(code, str) else "cancelled"
        errors = self.errors
        errors[key] = errors.get(key, 0) + 1
        d = _now() - t0
        self.sum += d
        self.buckets[bisect_left(BUCKETS, d)] += 1
        i = self.ended
        self.recent[i & _MASK] = d
        self.ended = i + 1

    def refused(self, exc: BaseException) -> None:
        """A call refused before it began (counted as begun and failed at once)."""
        self.begun += 1
        self.failed(_now(), exc)

    def answered(self, starts: list[float], now: float) -> None:
        """Calls started at ``starts`` (:func:`time.perf_counter`) all returned a result
        at ``now``: what :meth:`done` does for each, for the calls of one batch at once
        (in C but for one search per histogram bucket the batch's durations cross)."""
        n = len(starts)
        if not n:
            return
        durations = list(map(now.__sub__, starts))
        ordered = sorted(durations)
        buckets = self.buckets
        low = bisect_left(BUCKETS, ordered[0])
        high = bisect_left(BUCKETS, ordered[-1])
        if low == high:
            buckets[low] += n
        else:
            # A duration d falls in the first bucket whose bound is >= d.
            below = 0
            for j in range(low, high):
                within = bisect_right(ordered, BUCKETS[j])
                buckets[j] += within - below
                below = within
            buckets[high] += n - below
        self.ok += n
        self.sum += math.fsum(durations)
        i = self.ended
        recent = self.recent
        if n >= RECENT:
            recent[:] = durations[-RECENT:]
        else:
            at = i & _MASK
            end = at + n
            if end <= RECENT:
                recent[at:end] = durations
            else:
                recent[at:] = durations[: RECENT - at]
                recent[: end - RECENT] = durations[RECENT - at :]
        self.ended = i + n

    @property
    def total(self) -> int:
        return self.ok + sum(self.errors.values())

    def recent_durations(self) -> list[float]:
        """Durations of the last :data:`RECENT` calls at most."""
        return [d for d in self.recent if d >= 0.0]


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of already sorted values by nearest rank; None if empty."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


def plugin_snapshot(pc: PluginCalls, window: float) -> dict[str, Any]:
    """Plain data about one plugin's calls: totals, in flight, p50 and p99 of the recent
    calls (the last :data:`RECENT` of each tool), and calls/s over about the last
    ``window`` seconds between readings (None at the first reading)."""
    recent: list[float] = []
    ok = 0
    errors: dict[str, int] = {}
    for r in list(pc.routes):
        ok += r.ok
        for code, n in list(r.errors.items()):
            errors[code] = errors.get(code, 0) + n
        recent.extend(r.recent_durations())
    recent.sort()
    total = ok + sum(errors.values())
    now = _now()
    samples = pc.samples
    samples.append((now, total))
    while len(samples) > 2 and samples[1][0] <= now - window:
        del samples[0]
    if len(samples) > 64:
        del samples[1:-32]
    rate = None
    t_first, n_first = samples[0]
    if now > t_first:
        rate = round((total - n_first) / (now - t_first), 3)
    p50 = percentile(recent, 0.5)
    p99 = percentile(recent, 0.99)
    return {
        "plugin": pc.plugin,
        "in_flight": pc.in_flight,
        "calls": total,
        "errors": errors,
        "calls_per_second": rate,
        "p50_ms": None if p50 is None else round(p50 * 1000, 3),
        "p99_ms": None if p99 is None else round(p99 * 1000, 3),
    }
