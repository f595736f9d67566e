"""What ``mcphost status`` and the page show: one plain-data snapshot of a running host.

:func:`collect` runs on the host's event loop and only copies (list copies, the
supervisors' last readings: no ``/proc`` read, no sort); :func:`summarise` does the rest
(percentiles, calls/s) and may run on a thread. The control socket (:mod:`.control`) and
the page (``/status.json`` on the metrics listener) answer with the same dictionary.

Streams and batches add their rows under ``streams`` and ``queues``: a list of plain
dictionaries each, empty while nothing reports there (``streams``: the active streams
and the admission queue, from ``host.flow.snapshot()``; ``queues``: one row per batch
tool called so far, from ``Host.batching()``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import msgspec

from .calls import percentile

if TYPE_CHECKING:
    from ..host import Host

__all__ = ["FORMAT", "WINDOW", "collect", "sample", "snapshot", "status_of", "summarise"]

#: Version of the snapshot's layout; a reader ignores keys it does not know.
FORMAT = 1
#: Seconds over which calls/s is measured.
WINDOW = 10.0
_now = time.perf_counter


def collect(host: Host, since: float | None = None, origin: float | None = None) -> dict[str, Any]:
    """Copy what a snapshot needs from ``host`` (on its loop: copies only). ``since``:
    when the host started (Unix time), for a host that counts no metrics (else its
    metrics say); ``origin``: a ``perf_counter`` time before its first call, from which
    calls/s is measured until a first sample is older than :data:`WINDOW`."""
    m = host.metrics
    fe = None if m is None else m.frontend
    plugins: list[dict[str, Any]] = []
    for s in host.stats():
        row = dict(s)
        # The supervisor's own counts are the current worker's; the metrics' span them all.
        worker_in_flight = row.pop("inflight", 0)
        row["worker_calls"] = row.pop("calls", 0)
        row["in_flight"] = worker_in_flight
        pc = None if m is None else m.plugins.get(s["plugin"])
        if pc is not None:
            ok = 0
            errors: dict[str, int] = {}
            recent: list[float] = []
            for r in list(pc.routes):
                ok += r.ok
                for code, n in list(r.errors.items()):
                    errors[code] = errors.get(code, 0) + n
                recent.extend(r.recent)
            row["in_flight"] = pc.in_flight
            row["ok"] = ok
            row["errors"] = errors
            row["_recent"] = recent
            row["_rate"] = _rate(pc.samples, ok + sum(errors.values()), origin)
        plugins.append(row)
    return {
        "format": FORMAT,
        "pid": os.getpid(),
        "argv": list(sys.argv),
        "home": str(host.home.root),
        "started_at": since if m is None else m.started_at,
        "metrics": m is not None,
        "frontend": None
        if fe is None
        else {
            "transport": fe.transport,
            "sessions": fe.open_sessions(),
            "sessions_opened": fe.sessions_opened,
        },
        "plugins": plugins,
        "restart_pending": [msgspec.to_builtins(p) for p in host.restart_pending],
        "config_error": host.config_error,
        "registry_error": None if host.registry_error is None else str(host.registry_error),
        "events": [] if m is None else list(m.events),
        "streams": host.streams(),
        "queues": [
            {
                "tool": name,
                "queued": b["queued"],
                "in_flight": b["in_flight"],
                "calls": b["calls"],
                "batches": b["batches"],
                "largest_batch": b["largest_batch"],
                "size_allowed": b["size_allowed"],
            }
            for name, b in host.batching().items()
        ],
    }


def sample(host: Host, origin: float | None = None) -> None:
    """Take one (time, total calls) sample of each plugin (a timer calls this once a
    second: a few adds per tool)."""
    m = host.metrics
    if m is None:
        return
    for pc in list(m.plugins.values()):
        _rate(pc.samples, sum(r.total for r in list(pc.routes)), origin)


def _rate(
    samples: list[tuple[float, int]], total: int, origin: float | None = None
) -> float | None:
    """Calls/s over about the last :data:`WINDOW` seconds of samples (see
    :class:`~.calls.PluginCalls`), taking one more sample now. With no sample yet, the
    count starts from 0 calls at ``origin``."""
    now = _now()
    if not samples and origin is not None:
        samples.append((origin, 0))
    samples.append((now, total))
    while len(samples) > 2 and samples[1][0] <= now - WINDOW:
        del samples[0]
    if len(samples) > 64:
        del samples[1:-32]
    t_first, n_first = samples[0]
    if now <= t_first:
        return None
    return round((total - n_first) / (now - t_first), 3)


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    """The snapshot from :func:`collect`'s copy: per plugin calls, p50/p99 (ms) of its
    recent calls, uptime (may run on a thread: ``raw`` is this function's alone)."""
    started = raw.get("started_at")
    raw["uptime_seconds"] = None if started is None else round(time.time() - started, 3)
    for row in raw["plugins"]:
        recent = row.pop("_recent", None)
        rate = row.pop("_rate", None)
        if recent is None:
            for key in ("calls", "calls_per_second", "p50_ms", "p99_ms"):
                row.setdefault(key, None)
            continue
        durations = sorted(d for d in recent if d >= 0.0)
        p50 = percentile(durations, 0.5)
        p99 = percentile(durations, 0.99)
        row["calls"] = row.pop("ok") + sum(row["errors"].values())
        row["calls_per_second"] = rate
        row["p50_ms"] = None if p50 is None else round(p50 * 1000, 3)
        row["p99_ms"] = None if p99 is None else round(p99 * 1000, 3)
    return raw


async def status_of(host: Host) -> dict[str, Any]:
    """``host``'s snapshot, as its control socket gives it (copied on the loop,
    summarised on a thread)."""
    control = host.control
    if control is not None:
        return await control.status()
    return await asyncio.to_thread(summarise, collect(host))


def snapshot(host: Host, since: float | None = None) -> dict[str, Any]:
    """:func:`collect` and :func:`summarise` in one go (on the loop)."""
    return summarise(collect(host, since))
