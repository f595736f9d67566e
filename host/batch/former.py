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

import heapq
import math
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Batch", "BatchFormer", "FormerSettings", "LevelPolicy", "Pending", "Reason"]

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


@dataclass(eq=False, slots=True)
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
    """The queued calls of one key and lane: a deque per level, in arrival order.
    Cancelled calls stay in their deque until they reach its head."""

    __slots__ = ("_min_deadline", "levels", "live")

    def __init__(self, nlevels: int) -> None:
        self.levels: list[deque[Pending]] = [deque() for _ in range(nlevels)]
        self.live = 0
        self._min_deadline: float | None = math.inf  # None: to be found again

    def heads(self) -> list[Pending]:
        """The first live call of each level (cancelled heads are dropped here)."""
        out = []
        for q in self.levels:
            while q and q[0].cancelled:
                q.popleft()
            if q:
                out.append(q[0])
        return out

    def added(self, p: Pending) -> None:
        if self._min_deadline is not None and p.deadline < self._min_deadline:
            self._min_deadline = p.deadline

    def left(self, p: Pending) -> None:
        if p.deadline == self._min_deadline:
            self._min_deadline = None

    def min_deadline(self) -> float:
        if self._min_deadline is None:
            self._min_deadline = min(
                (p.deadline for q in self.levels for p in q if not p.cancelled),
                default=math.inf,
            )
        return self._min_deadline


class BatchFormer:
    """The queued calls of one batch tool and the rules that turn them into batches.

    Each operation costs about O(log n) for n queued calls (a heap orders the times at
    which calls expire) plus, when a batch leaves, O(size x levels)."""

    def __init__(self, settings: FormerSettings | None = None) -> None:
        self.settings = settings or FormerSettings()
        self._groups: dict[tuple[Hashable, int], _Group] = {}
        self._by_id: dict[int, tuple[Pending, _Group]] = {}
        self._level_counts = [0] * len(self.settings.levels)
        #: (when it may no longer run, id, call): entries of calls gone are skipped.
        self._ends: list[tuple[float, int, Pending]] = []
        #: Calls taken out as expired, not yet handed back by :meth:`expire`.
        self._expired: list[tuple[Pending, str]] = []

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
        group.added(p)
        self._by_id[p.id] = (p, group)
        self._level_counts[p.level] += 1
        end = min(p.deadline, p.expires)
        if end < math.inf:
            heapq.heappush(self._ends, (end, p.id, p))
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
        group.left(p)
        if group.live == 0:
            del self._groups[(p.key, p.lane)]

    def _sweep(self, now: float) -> None:
        """Move the calls that may no longer run out of the queues (into _expired);
        ``delay`` calls past their queue timeout move to the lowest level instead."""
        ends = self._ends
        lowest = len(self.settings.levels) - 1
        while ends and ends[0][0] <= now:
            _, call_id, p = heapq.heappop(ends)
            entry = self._by_id.get(call_id)
            if entry is None or entry[0] is not p:
                continue  # it left already
            group = entry[1]
            if p.deadline <= now:
                why = "deadline"
            elif p.expires <= now:
                if self.settings.levels[p.level].on_timeout == "delay":
                    if p.level != lowest:
                        self._demote(p, group, lowest)
                    else:  # already the lowest: it waits on where it is, untimed
                        p.expires = math.inf
                        if p.deadline < math.inf:
                            heapq.heappush(ends, (p.deadline, p.id, p))
                    continue
                why = "queue_timeout"
            else:  # pragma: no cover - an entry is pushed for min(deadline, expires)
                continue
            del self._by_id[call_id]
            group.levels[p.level].remove(p)
            p.cancelled = True
            self._forget(p, group)
            self._expired.append((p, why))

    def expire(self, now: float) -> list[tuple[Pending, str]]:
        """Take out the calls that may no longer run: ``deadline`` (their caller's time
        is up) and ``queue_timeout`` (waited their level's timeout out, ``reject``);
        ``delay`` calls move to the lowest level instead, to wait there untimed."""
        self._sweep(now)
        out, self._expired = self._expired, []
        return out

    def _demote(self, p: Pending, group: _Group, level: int) -> None:
        group.levels[p.level].remove(p)
        self._level_counts[p.level] -= 1
        p.level, p.expires = level, math.inf
        group.levels[level].append(p)
        self._level_counts[level] += 1
        if p.deadline < math.inf:
            heapq.heappush(self._ends, (p.deadline, p.id, p))

    # -- forming batches ---------------------------------------------------------------
    def _target(self, limit: int) -> int:
        """The size a full batch has: the largest preferred size within ``limit``."""
        fitting = [s for s in self.settings.preferred_sizes if s <= limit]
        return max(fitting) if fitting else limit

    def full_size(self, limit: int | None = None) -> int:
        """How many calls make a full batch with at most ``limit`` (the model's)."""
        return self._target(self._cap(limit))

    def full(self, p: Pending, limit: int | None = None) -> bool:
        """Whether the group of queued call ``p`` holds a full batch now."""
        group = self._groups.get((p.key, p.lane))
        return group is not None and group.live >= self._target(self._cap(limit))

    def due(self, p: Pending, expect: Expect = _no_time) -> float:
        """When newly queued ``p`` makes its group leave at the latest (while batches
        run), or must be taken out: what a timer must not miss for it."""
        return min(p.enqueued + self.settings.max_queue_delay, p.deadline - expect(1), p.expires)

    def _dispatch_by(self, group: _Group, heads: list[Pending], n: int, expect: Expect) -> float:
        first = min(p.enqueued for p in heads)
        return min(first + self.settings.max_queue_delay, group.min_deadline() - expect(n))

    def _cap(self, limit: int | None) -> int:
        cap = self.settings.max_batch_size if limit is None else limit
        return max(1, min(cap, self.settings.max_batch_size))

    def take(
        self, now: float, *, idle: bool, limit: int | None = None, expect: Expect = _no_time
    ) -> Batch | None:
        """The batch to dispatch now, if any. ``idle``: a replica waits for work;
        ``limit``: the largest batch the latency model allows (at most the maximum);
        ``expect(n)``: the expected service seconds of a batch of ``n``. Calls that may
        no longer run never go: :meth:`expire` hands them back."""
        self._sweep(now)
        if not self._groups:
            return None
        cap = self._cap(limit)
        target = self._target(cap)
        aging = self.settings.aging
        best: tuple[float, float, _Group, Reason] | None = None
        for group in self._groups.values():
            heads = group.heads()
            reason: Reason
            if idle:
                reason = "idle"
            elif group.live >= target:
                reason = "size"
            elif now >= self._dispatch_by(group, heads, min(group.live, cap), expect):
                reason = "deadline"
            else:
                continue
            for p in heads:
                rank = (p.priority(now, aging), p.enqueued)
                if best is None or rank < best[:2]:
                    best = (*rank, group, reason)
        if best is None:
            return None
        _, _, group, reason = best
        size = self._target(min(cap, group.live))
        items: list[Pending] = []
        # Within a level, calls wait in arrival order, which is also priority order (an
        # older call has aged more): merging the level heads gives the best calls first.
        queues = [q for q in group.levels if q]
        while len(items) < size:
            if len(queues) == 1:
                q = queues[0]
                while q and len(items) < size:
                    p = q.popleft()
                    if not p.cancelled:
                        items.append(p)
                break
            heads = group.heads()
            if not heads:  # pragma: no cover - live counts the calls in the deques
                break
            p = min(heads, key=lambda h: (h.priority(now, aging), h.enqueued))
            group.levels[p.level].popleft()
            items.append(p)
            queues = [q for q in group.levels if q]
        for p in items:
            del self._by_id[p.id]
            self._forget(p, group)
        return Batch(reason=reason, items=items, key=items[0].key, lane=items[0].lane)

    def wakeup(
        self, expect: Expect = _no_time, limit: int | None = None, *, dispatch: bool = True
    ) -> float | None:
        """When :meth:`take` or :meth:`expire` next has something to do without a new
        call or an idle replica (None: nothing is queued). ``dispatch=False``: when only
        :meth:`expire` has (no batch may leave before one ends)."""
        if not self._groups:
            return None
        cap = self._cap(limit)
        when = math.inf
        for group in self._groups.values() if dispatch else ():
            when = min(when, self._dispatch_by(group, group.heads(), min(group.live, cap), expect))
        ends = self._ends
        while ends and (
            ends[0][1] not in self._by_id or self._by_id[ends[0][1]][0] is not ends[0][2]
        ):
            heapq.heappop(ends)
        if ends:
            when = min(when, ends[0][0])
        return when
