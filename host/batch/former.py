"""Which queued calls go together, and when: the batch former, with no I/O in it.

Calls to one batch tool wait here in groups: calls share a group (and so a batch) only
when they have the same routing key and the same lane (small or large arguments). Within
a group each priority level keeps its calls in arrival order. A group is dispatched

- at once when a replica is idle and asks for work (``idle``): a call never waits while
  a worker could run it;
- when it holds enough calls for a full batch (``size``): the largest preferred size that
  fits, else the size the latency model allows;
- when it holds its share of the calls in hand (``balance``, when the caller passes the
  calls of the batches running): see :func:`balanced`;
- when its earliest call must leave (``deadline``): ``max_queue_delay`` after it came, or
  its own deadline minus the expected service time of the batch, whichever is first.

Among the groups that may go, the one whose best call has the highest priority goes
first; a call's priority rises by one level for every ``aging`` seconds it waits, so
low levels are never starved.

Lower levels yield to a higher one (``priority_window``): a level is *active* while
calls of it wait or run, or one arrived within the window, and calls of levels below the
highest active one (not yet aged up to it) are *yielding*. Yielding calls never share a
batch with the others, leave only in short batches (``short``: what the latency model
says a call of the higher level may wait behind), and never take the last free slot of
``slots`` batches in flight: it is kept for the higher level, whose calls see only the
batches of their own levels running, so a lone high call leaves at once (``priority``)
and waits in the worker behind at most one short batch.

Cancelled calls are skipped and calls past their deadline or queue timeout are never
dispatched: :meth:`BatchFormer.expire` hands them back with a reason. Time is passed in
(seconds, any monotonic clock), so everything here is tested without a loop or a clock.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "Batch",
    "BatchFormer",
    "FormerSettings",
    "LevelPolicy",
    "Pending",
    "Reason",
    "balanced",
]

Reason = Literal["idle", "size", "balance", "deadline", "priority"]


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
    #: Seconds a level stays active after its last call arrived: while a level is
    #: active, lower levels yield to it (0: they never do).
    priority_window: float = 0.0

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
        if not (self.priority_window >= 0 and math.isfinite(self.priority_window)):
            raise ValueError("priority_window must be a number of seconds, 0 or more")


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


def balanced(queued: int, in_hand: int, slots: float) -> bool:
    """Whether a group of ``queued`` calls holds its share of the calls in hand while
    batches run: at least (``in_hand`` + ``queued``) / ``slots``, where ``in_hand`` is
    the calls of the batches running and ``slots`` the batches that may run at once.
    A closed loop of callers (each calls again when answered) thus settles into
    batches of one size, one running while the host answers another, however large
    the batches may be; without it, a batch allowed to hold every caller takes nearly
    all of them and the next one only the rest."""
    return queued * (slots - 1) >= in_hand


def _no_time(n: int) -> float:
    return 0.0


class _Group:
    """The queued calls of one key and lane: a deque per level, in arrival order.
    Cancelled calls stay in their deque until they reach its head."""

    __slots__ = ("_min_deadline", "counts", "levels", "live")

    def __init__(self, nlevels: int) -> None:
        self.levels: list[deque[Pending]] = [deque() for _ in range(nlevels)]
        self.live = 0
        #: Live calls per level.
        self.counts = [0] * nlevels
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
        #: Every queued call by id; its truthiness says whether any waits (the batcher
        #: reads it once per call: cheaper than ``len(former)``). Never rebound.
        self.calls: dict[int, tuple[Pending, _Group]] = {}
        self._by_id = self.calls
        self._level_counts = [0] * len(self.settings.levels)
        #: When a call of each level last arrived.
        self._seen = [-math.inf] * len(self.settings.levels)
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
        group.counts[p.level] += 1
        group.added(p)
        if now > self._seen[p.level]:
            self._seen[p.level] = now
        self._by_id[p.id] = (p, group)
        self._level_counts[p.level] += 1
        end = min(p.deadline, p.expires)
        if end < math.inf:
            heapq.heappush(self._ends, (end, p.id, p))
        return None

    def arrived(self, level: int, now: float) -> None:
        """A call of ``level`` arrived that did not queue here (it went at once, or
        waits elsewhere): its level is active for ``priority_window`` all the same."""
        level = min(max(level, 0), len(self._seen) - 1)
        if now > self._seen[level]:
            self._seen[level] = now

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
        group.counts[p.level] -= 1
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
        group.counts[p.level] -= 1
        p.level, p.expires = level, math.inf
        group.levels[level].append(p)
        self._level_counts[level] += 1
        group.counts[level] += 1
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

    def held(self, p: Pending) -> int:
        """The calls queued in the group of queued call ``p``."""
        group = self._groups.get((p.key, p.lane))
        return 0 if group is None else group.live

    def due(self, p: Pending, expect: Expect = _no_time) -> float:
        """When newly queued ``p`` makes its group leave at the latest (while batches
        run), or must be taken out: what a timer must not miss for it."""
        return min(p.enqueued + self.settings.max_queue_delay, p.deadline - expect(1), p.expires)

    def _cap(self, limit: int | None) -> int:
        cap = self.settings.max_batch_size if limit is None else limit
        return max(1, min(cap, self.settings.max_batch_size))

    def top(self, now: float, running: Sequence[int] = ()) -> int | None:
        """The highest level active at ``now``: one with calls waiting or batches
        ``running`` (counts per level), or whose last call arrived within
        ``priority_window``. None when lower levels never yield (no window) or nothing
        is active."""
        window = self.settings.priority_window
        if not window:
            return None
        cutoff = now - window
        for level, (n, seen) in enumerate(zip(self._level_counts, self._seen, strict=True)):
            if n or seen > cutoff or (level < len(running) and running[level]):
                return level
        return None

    def _candidates(
        self,
        now: float,
        running: Sequence[int],
        slots: float,
        cap: int,
        short: int,
    ) -> Iterator[_Candidate]:
        """What may leave now, per group: its calls of the higher levels and its
        yielding ones (two candidates), or all of them when nothing yields."""
        busy = sum(running)
        if busy >= slots:
            return
        top = self.top(now, running)
        aging = self.settings.aging
        if top is None:
            for group in self._groups.values():
                heads = group.heads()
                yield _Candidate(group, heads, group.live, cap, busy == 0, False, None)
            return
        # The higher levels see only their own batches running; the yielding ones leave
        # only while a slot stays free for the higher levels (or when nothing runs).
        high_idle = not any(running[: top + 1])
        low_may = busy == 0 or busy + 1 < slots
        low_cap = max(1, min(short, cap))
        for group in self._groups.values():
            high: list[Pending] = []
            low: list[Pending] = []
            for h in group.heads():
                (low if h.level > top and h.priority(now, aging) > top else high).append(h)
            if high:
                n = sum(group.counts[h.level] for h in high)
                yield _Candidate(group, high, n, cap, high_idle, busy > 0, top)
            if low and low_may:
                n = sum(group.counts[h.level] for h in low)
                yield _Candidate(group, low, n, low_cap, busy == 0, False, None, top)

    def _dispatch_by(self, c: _Candidate, expect: Expect) -> float:
        first = min(p.enqueued for p in c.heads)
        n = min(c.count, c.cap)
        return min(first + self.settings.max_queue_delay, c.group.min_deadline() - expect(n))

    @staticmethod
    def _running(idle: bool | None, running: Sequence[int] | None) -> Sequence[int]:
        if running is not None:
            return running
        return () if idle else (1,)

    def take(
        self,
        now: float,
        *,
        idle: bool | None = None,
        running: Sequence[int] | None = None,
        slots: float = math.inf,
        limit: int | None = None,
        expect: Expect = _no_time,
        short: int = 1,
        in_hand: int | None = None,
    ) -> Batch | None:
        """The batch to dispatch now, if any. ``running``: the batches in flight, as
        counts per level (``idle=True``: none; ``idle=False``: one of level 0);
        ``slots``: how many may be in flight at once; ``limit``: the largest batch the
        latency model allows (at most the maximum); ``short``: the largest batch of
        yielding calls; ``expect(n)``: the expected service seconds of a batch of
        ``n``; ``in_hand``: the calls of the batches in flight, if a group may also
        leave once it holds its share (:func:`balanced`). Calls that may no longer run
        never go: :meth:`expire` hands them back."""
        self._sweep(now)
        if not self._groups:
            return None
        cap = self._cap(limit)
        aging = self.settings.aging
        best: tuple[float, float, _Candidate, Reason] | None = None
        for c in self._candidates(now, self._running(idle, running), slots, cap, short):
            reason: Reason
            if c.idle:
                reason = "priority" if c.overtakes else "idle"
            elif c.count >= self._target(c.cap):
                reason = "size"
            elif in_hand is not None and balanced(c.count, in_hand, slots):
                reason = "balance"
            elif now >= self._dispatch_by(c, expect):
                reason = "deadline"
            else:
                continue
            for p in c.heads:
                rank = (p.priority(now, aging), p.enqueued)
                if best is None or rank < best[:2]:
                    best = (*rank, c, reason)
        if best is None:
            return None
        _, _, c, reason = best
        group = c.group
        size = self._target(min(c.cap, c.count))
        items: list[Pending] = []
        # Within a level, calls wait in arrival order, which is also priority order (an
        # older call has aged more): merging the level heads gives the best calls first.
        queues = [group.levels[h.level] for h in c.heads]
        while len(items) < size:
            heads = []
            for q in queues:
                while q and q[0].cancelled:
                    q.popleft()
                if q and c.admits(q[0], now, aging):
                    heads.append(q[0])
            if not heads:
                break
            if len(heads) == 1:
                q = group.levels[heads[0].level]
                while q and len(items) < size and (q[0].cancelled or c.admits(q[0], now, aging)):
                    p = q.popleft()
                    if not p.cancelled:
                        items.append(p)
                break
            p = min(heads, key=lambda h: (h.priority(now, aging), h.enqueued))
            group.levels[p.level].popleft()
            items.append(p)
        for p in items:
            del self._by_id[p.id]
            self._forget(p, group)
        return Batch(reason=reason, items=items, key=items[0].key, lane=items[0].lane)

    def wakeup(
        self,
        expect: Expect = _no_time,
        limit: int | None = None,
        *,
        dispatch: bool = True,
        now: float | None = None,
        running: Sequence[int] | None = None,
        slots: float = math.inf,
        short: int = 1,
    ) -> float | None:
        """When :meth:`take` or :meth:`expire` next has something to do without a new
        call or a batch ending (None: nothing is queued), for what :meth:`take` was
        just given (``now``, ``running``, ``slots``, ``short``). ``dispatch=False``:
        when only :meth:`expire` has (no batch may leave before one ends)."""
        if not self._groups:
            return None
        cap = self._cap(limit)
        when = math.inf
        if dispatch:
            at = -math.inf if now is None else now
            for c in self._candidates(at, self._running(False, running), slots, cap, short):
                when = min(when, self._dispatch_by(c, expect))
        ends = self._ends
        while ends and (
            ends[0][1] not in self._by_id or self._by_id[ends[0][1]][0] is not ends[0][2]
        ):
            heapq.heappop(ends)
        if ends:
            when = min(when, ends[0][0])
        return when


@dataclass(slots=True)
class _Candidate:
    """Calls of one group that may leave together: the heads of their levels."""

    group: _Group
    heads: list[Pending]
    #: Live calls of those levels (a yielding level aged in part counts whole).
    count: int
    #: The most one batch of them takes.
    cap: int
    #: Nothing of theirs runs: they leave at once.
    idle: bool
    #: They leave at once while batches of lower levels run (reason ``priority``).
    overtakes: bool
    #: Higher levels: calls of a level below ``top`` join only once aged up to it.
    top: int | None
    #: Yielding calls: only those still below ``low_top`` join.
    low_top: int | None = None

    def admits(self, p: Pending, now: float, aging: float | None) -> bool:
        """Whether head ``p`` of one of the levels may join this batch."""
        if self.top is not None and p.level > self.top:
            return p.priority(now, aging) <= self.top
        if self.low_top is not None:
            return p.priority(now, aging) > self.low_top
        return True
