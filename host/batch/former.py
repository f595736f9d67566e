"""Which queued calls go together, and when: the batch former, with no I/O in it.

Calls to one batch tool wait here in groups: calls share a group (and so a batch) only
when they have the same routing key and the same lane (small or large arguments). Within
a group each priority level keeps its calls in arrival order. A group is dispatched

- at once when a replica is idle and asks for work (``idle``): a call never waits while
  a worker could run it;
- when it holds enough calls for a full batch (``size``): the largest preferred size that
  fits, else the size the latency model allows;
- when its earliest call must leave (``deadline``): ``max_queue_delay`` after it came, or
  its own deadline minus the expected service time of the batch, whichever is first.

Among the groups that may go, the one whose best call has the highest priority goes
first; a call's priority rises by one level for every ``aging`` seconds it waits, so
low levels are never starved. Cancelled calls are skipped and calls past their deadline
or queue timeout are never dispatched: :meth:`BatchFormer.expire` hands them back with a
reason. Time is passed in (seconds, any monotonic clock), so everything here is tested
without a loop or a clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Batch", "BatchFormer", "FormerSettings", "LevelPolicy", "Pending"]

Reason = Literal["idle", "size", "deadline"]


@dataclass(frozen=True)
class LevelPolicy:
    """What one priority level admits and how long its calls may wait."""

    #: Calls this level may hold; one more is refused at once (``busy``).
    max_queue_size: int = 1024
    #: Seconds a call may wait at this level (None: no limit); a caller may ask for less.
    timeout: float | None = None
    #: A call that waited its timeout out is refused (``reject``) or moved to the lowest
    #: level to wait on without a timeout (``delay``).
    on_timeout: Literal["reject", "delay"] = "reject"


@dataclass(frozen=True)
class FormerSettings:
    max_batch_size: int = 32
    #: Sizes to prefer when more calls wait than one batch may take (ascending).
    preferred_sizes: tuple[int, ...] = ()
    #: Seconds the first call of a group may wait for others to join it.
    max_queue_delay: float = 0.005
    #: Priority levels, 0 the highest.
    levels: tuple[LevelPolicy, ...] = (LevelPolicy(), LevelPolicy(), LevelPolicy())
    #: Seconds of waiting worth one level of priority (None: no aging).
    aging: float | None = 1.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if any(s < 1 for s in self.preferred_sizes):
            raise ValueError("preferred batch sizes must be at least 1")
        if not self.levels:
            raise ValueError("at least one priority level is needed")
        if not (self.max_queue_delay >= 0 and math.isfinite(self.max_queue_delay)):
            raise ValueError("max_queue_delay must be a number of seconds, 0 or more")
        if self.aging is not None and not self.aging > 0:
            raise ValueError("aging must be a positive number of seconds, or None")


@dataclass(eq=False)
class Pending:
    """One queued call: what the former needs to know of it."""

    id: int
    level: int
    enqueued: float
    #: The caller's own deadline (seconds, same clock).
    deadline: float = math.inf
    #: Calls share a batch only with the same key and lane.
    key: Hashable = None
    lane: int = 0
    #: A queue timeout shorter than the level's, asked for by the caller.
    timeout: float | None = None
    cancelled: bool = False
    expires: float = field(default=math.inf, init=False)

    def priority(self, now: float, aging: float | None) -> float:
        """Lower is served first: the level, less one per ``aging`` seconds waited."""
        if aging is None:
            return float(self.level)
        return self.level - (now - self.enqueued) / aging


@dataclass(frozen=True)
class Batch:
    reason: Reason
    items: list[Pending]
    key: Hashable
    lane: int


Expect = Callable[[int], float]


def _no_time(n: int) -> float:
    return 0.0


class _Group:
    __slots__ = ("levels", "live")

    def __init__(self, nlevels: int) -> None:
        self.levels: list[deque[Pending]] = [deque() for _ in range(nlevels)]
        self.live = 0

    def heads(self) -> Iterator[Pending]:
        """The first live call of each level (cancelled heads are dropped here)."""
        for q in self.levels:
            while q and q[0].cancelled:
                q.popleft()
            if q:
                yield q[0]

    def ready_heads(self, now: float) -> Iterator[Pending]:
        """The first call of each level that may still run at ``now``."""
        for q in self.levels:
            for p in q:
                if not p.cancelled and p.deadline > now and p.expires > now:
                    yield p
                    break

    def calls(self) -> Iterator[Pending]:
        for q in self.levels:
            for p in q:
                if not p.cancelled:
                    yield p


class BatchFormer:
    """The queued calls of one batch tool and the rules that turn them into batches."""

    def __init__(self, settings: FormerSettings | None = None) -> None:
        self.settings = settings or FormerSettings()
        self._groups: dict[tuple[Hashable, int], _Group] = {}
        self._by_id: dict[int, tuple[Pending, _Group]] = {}
        self._level_counts = [0] * len(self.settings.levels)

    def __len__(self) -> int:
        return len(self._by_id)

    def queued(self, level: int) -> int:
        """Calls waiting at ``level``."""
        return self._level_counts[level]

    # -- calls in and out --------------------------------------------------------------
    def submit(self, p: Pending, now: float) -> str | None:
        """Queue ``p``; the reason it is refused instead (``queue_full``), or None."""
        levels = self.settings.levels
        p.level = min(max(p.level, 0), len(levels) - 1)
        if self._level_counts[p.level] >= levels[p.level].max_queue_size:
            return "queue_full"
        if p.id in self._by_id:
            raise ValueError(f"call {p.id} is queued already")
        limit = levels[p.level].timeout
        if p.timeout is not None:
            limit = p.timeout if limit is None else min(limit, p.timeout)
        p.expires = math.inf if limit is None else p.enqueued + limit
        group = self._groups.get((p.key, p.lane))
        if group is None:
            group = self._groups[(p.key, p.lane)] = _Group(len(levels))
        group.levels[p.level].append(p)
        group.live += 1
        self._by_id[p.id] = (p, group)
        self._level_counts[p.level] += 1
        return None

    def cancel(self, call_id: int) -> bool:
        """Forget a queued call (its caller went away); False when it is not queued."""
        entry = self._by_id.pop(call_id, None)
        if entry is None:
            return False
        p, group = entry
        p.cancelled = True
        self._forget(p, group)
        return True

    def _forget(self, p: Pending, group: _Group) -> None:
        self._level_counts[p.level] -= 1
        group.live -= 1
        if group.live == 0:
            del self._groups[(p.key, p.lane)]

    def expire(self, now: float) -> list[tuple[Pending, str]]:
        """Take out the calls that may no longer run: ``deadline`` (their caller's time
        is up) and ``queue_timeout`` (waited their level's timeout out, ``reject``);
        ``delay`` calls move to the lowest level instead."""
        out: list[tuple[Pending, str]] = []
        lowest = len(self.settings.levels) - 1
        for p, group in list(self._by_id.values()):
            if p.deadline <= now:
                why = "deadline"
            elif p.expires <= now:
                if self.settings.levels[p.level].on_timeout == "delay" and p.level != lowest:
                    self._demote(p, group, lowest)
                    continue
                if self.settings.levels[p.level].on_timeout == "delay":
                    p.expires = math.inf  # waits on at the lowest level, untimed
                    continue
                why = "queue_timeout"
            else:
                continue
            del self._by_id[p.id]
            p.cancelled = True
            self._forget(p, group)
            out.append((p, why))
        return out

    def _demote(self, p: Pending, group: _Group, level: int) -> None:
        group.levels[p.level].remove(p)
        self._level_counts[p.level] -= 1
        p.level, p.expires = level, math.inf
        group.levels[level].append(p)
        self._level_counts[level] += 1

    # -- forming batches ---------------------------------------------------------------
    def _target(self, limit: int) -> int:
        """The size a full batch has: the largest preferred size within ``limit``."""
        fitting = [s for s in self.settings.preferred_sizes if s <= limit]
        return max(fitting) if fitting else limit

    def _dispatch_by(self, group: _Group, n: int, expect: Expect) -> float:
        delay = self.settings.max_queue_delay
        service = expect(n)
        return min(
            min(p.enqueued for p in group.heads()) + delay,
            min(p.deadline for p in group.calls()) - service,
        )

    def take(
        self, now: float, *, idle: bool, limit: int | None = None, expect: Expect = _no_time
    ) -> Batch | None:
        """The batch to dispatch now, if any. ``idle``: a replica waits for work;
        ``limit``: the largest batch the latency model allows (at most the maximum);
        ``expect(n)``: the expected service seconds of a batch of ``n``."""
        if not self._groups:
            return None
        cap = self.settings.max_batch_size if limit is None else limit
        cap = max(1, min(cap, self.settings.max_batch_size))
        target = self._target(cap)
        aging = self.settings.aging
        best: tuple[float, float, _Group, Reason] | None = None
        for group in self._groups.values():
            heads = list(group.ready_heads(now))
            if not heads:
                continue
            n = min(group.live, cap)
            if idle:
                reason: Reason | None = "idle"
            elif group.live >= target:
                reason = "size"
            elif now >= self._dispatch_by(group, n, expect):
                reason = "deadline"
            else:
                reason = None
            if reason is None:
                continue
            head = min(heads, key=lambda p: (p.priority(now, aging), p.enqueued))
            rank = (head.priority(now, aging), head.enqueued)
            if best is None or rank < best[:2]:
                best = (*rank, group, reason)
        if best is None:
            return None
        _, _, group, reason = best
        ready = sorted(
            (p for p in group.calls() if p.deadline > now and p.expires > now),
            key=lambda p: (p.priority(now, aging), p.enqueued),
        )
        size = self._target(min(cap, len(ready)))
        items = ready[:size]
        key, lane = items[0].key, items[0].lane
        for p in items:
            group.levels[p.level].remove(p)
            del self._by_id[p.id]
            self._forget(p, group)
        return Batch(reason=reason, items=items, key=key, lane=lane)

    def wakeup(self, expect: Expect = _no_time, limit: int | None = None) -> float | None:
        """When :meth:`take` or :meth:`expire` next has something to do without a new
        call or an idle replica (None: nothing is queued)."""
        if not self._groups:
            return None
        cap = self.settings.max_batch_size if limit is None else max(1, limit)
        cap = min(cap, self.settings.max_batch_size)
        when = math.inf
        for group in self._groups.values():
            when = min(when, self._dispatch_by(group, min(group.live, cap), expect))
            for p in group.calls():
                when = min(when, p.deadline, p.expires)
        return when
