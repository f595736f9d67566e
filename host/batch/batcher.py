"""Coalescing concurrent calls to one batch tool into batch calls, on the event loop.

A batch tool takes a list (its batch parameter) and returns a list of the same length.
Callers call it as usual, each with its own list (often of one item); the batcher joins
the lists of calls that agree on every other argument, makes one call to the worker,
and hands each caller its own slice of the result. The rules of which calls go
together and when are :class:`~.former.BatchFormer`'s; the sizes come from
:class:`~.model.LatencyModel`. A call that finds nothing queued and no batch of its tool
in flight goes at once on the caller's own task: at low load batching costs nothing.

Most calls are plain: the default priority, no other arguments to group by, no queue
timeout of their own. While only such calls wait they are kept in one FIFO of tuples
(a few hundred nanoseconds a call); the first call that is not plain moves them into
the former, which then orders everything until it is empty again.

While a call of a level above the default has arrived within ``priority_window``, the
plain FIFO is not used: every call goes through the former, where lower levels yield to
the higher one (:mod:`.former`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Awaitable, Callable
from operator import itemgetter, methodcaller
from typing import Any

from mcphost.sdk.errors import BatchResults, Busy, MCPHostError, PluginError, ToolTimeout

from ..observe.calls import BUCKETS, RouteStats, clock
from .former import BatchFormer, FormerSettings, Pending, Reason, balanced
from .keys import KeyFunction
from .model import LatencyModel

__all__ = ["SIZE_BUCKETS", "BatchStats", "ToolBatcher", "batch_parameter", "is_large"]

#: ``dispatch(args, timeout, key)``: one call to the tool on a worker; ``key`` (the
#: calls' batch key, or None) lets a pool keep one key on one replica.
Dispatch = Callable[[dict[str, Any], float, str | None], Awaitable[Any]]

_ids = itertools.count(1)
#: The batcher's clock, for deadlines, queue waits, batch service times and the calls'
#: durations: the one its calls' stats count on. Not the loop's: uvloop's moves in steps
#: of a millisecond, coarser than most queue waits. Timers are set on the loop by the
#: time left (:meth:`ToolBatcher._arm`).
_clock = clock

# A batch's entries are read field by field in C (map over an itemgetter), not by a
# Python loop per call: at 32 calls a batch that is most of the batcher's cost per call.
_future_of = itemgetter(0)
_args_of = itemgetter(1)
_count_of = itemgetter(2)
_deadline_of = itemgetter(3)
_enqueued_of = itemgetter(4)
_stats_of = itemgetter(6)
_first = itemgetter(0)
_is_done = methodcaller("done")
#: The futures this module makes come from the loop; when they are asyncio's own (C)
#: futures, results are handed out by mapping its unbound ``set_result``.
_set_result = asyncio.Future.set_result


def _consume(iterator: Any) -> None:
    """Run an iterator to its end in C."""
    deque(iterator, maxlen=0)


#: How a call whose caller went away (its future cancelled) is counted.
_GONE = asyncio.CancelledError()


def _count(entry: _Entry, error: BaseException | None) -> None:
    """Count one call the batcher answered (``error`` None: with a result) in its
    route's stats, if it came with them."""
    stats = entry[6]
    if stats is not None:
        if error is None:
            stats.done(entry[4])
        else:
            stats.failed(entry[4], error)


def _answered(entries: list[_Entry]) -> None:
    """Count the calls of a batch that all got their results (once a batch, in C for
    the usual batch whose calls all came by one route)."""
    every = list(map(_stats_of, entries))
    first = every[0]
    if every.count(first) == len(every):
        if first is not None:
            first.answered(list(map(_enqueued_of, entries)), _clock())
        return
    for e in entries:
        _count(e, None)


async def _counted(sent: Awaitable[Any], stats: RouteStats) -> Any:
    """Await ``sent`` and count it in ``stats`` (a call that does not wait as a plain
    one: its own frame costs nothing next to its path)."""
    t0 = stats.begin()
    try:
        result = await sent
    except BaseException as exc:
        stats.failed(t0, exc)
        raise
    stats.done(t0)
    return result


def batch_parameter(input_schema: dict[str, Any]) -> str | None:
    """The batch tool's list parameter: its one required parameter of array type."""
    props = input_schema.get("properties") or {}
    required = set(input_schema.get("required") or ())
    arrays = [
        name
        for name, schema in props.items()
        if isinstance(schema, dict) and schema.get("type") == "array" and name in required
    ]
    return arrays[0] if len(arrays) == 1 else None


_SCALARS = (int, float, bool, type(None))


def is_large(value: Any, limit: int) -> bool:
    """Whether ``value`` takes at least about ``limit`` bytes as JSON. The walk stops
    as soon as it knows, so a small value costs little and a large one no more than
    ``limit`` bytes' worth of looking."""
    budget = limit
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, (str, bytes)):
            budget -= len(v) + 2
        elif isinstance(v, dict):
            budget -= 2 + 4 * len(v)
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            budget -= 2 + len(v)
            stack.extend(v)
        else:
            budget -= 8
        if budget <= 0:
            return True
    return False


#: Upper bounds of the batch-size histogram (items); the last bucket is +Inf.
SIZE_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class BatchStats:
    """Counts of one batcher, for status and metrics (histograms as cumulative bucket
    counts: observe.calls.BUCKETS for waits, SIZE_BUCKETS for sizes, +Inf last)."""

    __slots__ = (
        "batches",
        "calls",
        "items",
        "largest",
        "reasons",
        "rejected",
        "size_sum",
        "sizes",
        "wait_buckets",
        "wait_seconds",
    )

    def __init__(self) -> None:
        self.calls = 0
        #: Batches sent (calls that went alone are not counted here).
        self.batches = 0
        #: Items of the batches answered.
        self.items = 0
        self.largest = 0
        self.reasons: dict[str, int] = {
            "alone": 0,
            "idle": 0,
            "size": 0,
            "balance": 0,
            "deadline": 0,
            "priority": 0,
        }
        self.rejected: dict[str, int] = {}
        #: Batches per size bucket (calls that went alone are batches of one here).
        self.sizes = [0] * (len(SIZE_BUCKETS) + 1)
        self.size_sum = 0
        #: Per priority level: calls per queue-wait bucket, and their total seconds.
        self.wait_buckets: dict[int, list[int]] = {}
        self.wait_seconds: dict[int, float] = {}

    def waited_in_order(self, level: int, enqueued: list[float], now: float) -> None:
        """The queue waits of calls of one ``level`` leaving at ``now``, ``enqueued``
        the times they came, oldest first. Their waits then fall in order, so the counts
        per bucket come from a search of the waits per bucket crossed (most batches
        cross one or two), not from a look at every call."""
        counts = self.wait_buckets.get(level)
        if counts is None:
            counts = self.wait_buckets[level] = [0] * (len(BUCKETS) + 1)
        n = len(enqueued)
        waits = list(map(now.__sub__, enqueued))  # the longest first
        # A wait w falls in the first bucket whose bound is >= w (bisect_left).
        low = bisect_left(BUCKETS, waits[-1])
        high = bisect_left(BUCKETS, waits[0])
        if low == high:
            counts[low] += n
        else:
            waits.reverse()
            below = 0
            for j in range(low, high):
                within = bisect_right(waits, BUCKETS[j])  # waits <= BUCKETS[j]
                counts[j] += within - below
                below = within
            counts[high] += n - below
        self.wait_seconds[level] = self.wait_seconds.get(level, 0.0) + math.fsum(waits)

    def waited_all(self, entries: list[_Entry], now: float) -> None:
        """The queue waits of the calls of a batch leaving at ``now``, each under its
        level (once a batch: a level's counts are looked up once for its run of calls)."""
        level = -1
        counts: list[int] = []
        total = 0.0
        wait_seconds = self.wait_seconds
        for e in entries:
            if e[5] != level:
                if level >= 0:
                    wait_seconds[level] = total
                level = e[5]
                counts = self.wait_buckets.get(level)  # type: ignore[assignment]
                if counts is None:
                    counts = self.wait_buckets[level] = [0] * (len(BUCKETS) + 1)
                total = wait_seconds.get(level, 0.0)
            seconds = now - e[4]
            counts[bisect_left(BUCKETS, seconds)] += 1
            total += seconds
        if level >= 0:
            wait_seconds[level] = total


class _Waiting(Pending):
    """A call queued in the former and what its caller waits on; ``stats``: where the
    batcher counts the call when it answers it (None: counted by its caller)."""

    __slots__ = ("args", "count", "future", "stats")

    future: asyncio.Future[Any]
    args: dict[str, Any]
    count: int
    stats: RouteStats | None


#: What a batch is made of: (future, args, items, deadline, enqueued, level, stats). A
#: plain queued call is one already (at the default level): it joins a batch as it is.
#: ``stats``: the call's route's counts, kept by the batcher for the call (None: not
#: counted here). Times are :data:`_clock`'s.
_Entry = tuple["asyncio.Future[Any]", dict[str, Any], int, float, float, int, RouteStats | None]


class ToolBatcher:
    """The batcher of one batch tool (``plugin.tool``)."""

    def __init__(
        self,
        tool: str,
        param: str,
        dispatch: Dispatch,
        settings: FormerSettings | None = None,
        *,
        target_latency: float | None = None,
        max_in_flight: int = 1,
        default_priority: int = 1,
        large_item_bytes: int = 64 * 1024,
        key: KeyFunction | None = None,
    ) -> None:
        self.tool = tool
        self.param = param
        self._dispatch = dispatch
        self.former = BatchFormer(settings)
        #: The former's queued calls: empty while nothing waits there.
        self._formed = self.former.calls
        self.settings = self.former.settings
        self.model = LatencyModel(self.settings.max_batch_size)
        #: :meth:`_full_size`'s answer while the model and the target stay as they are.
        self._sized: int | None = None
        self.target_latency = target_latency
        #: Batches of this tool running at once: with none running a call goes at once;
        #: with some, a group goes when full or after ``max_queue_delay``; at this many,
        #: calls wait for one to end.
        self.max_in_flight = max_in_flight
        self.default_priority = min(max(default_priority, 0), len(self.settings.levels) - 1)
        #: Plain calls (default level) that may wait at once.
        self._plain_limit = self.settings.levels[self.default_priority].max_queue_size
        #: Calls whose list takes about this many bytes or more go in the large lane:
        #: they share batches only with each other.
        self.large_item_bytes = large_item_bytes
        #: The tool's batch key: only calls with the same key share a batch, and the
        #: key goes with the batch to the pool (None: grouped by other arguments only).
        self.key = key
        #: What the host made this batcher from; a change makes a new one.
        self.made_from: object = None
        self.in_flight = 0
        #: Calls of the batches in flight (a lone call is one).
        self._in_hand = 0
        #: Batches in flight per priority level (a batch's level is its best call's).
        self._running = [0] * len(self.settings.levels)
        #: Seconds a level stays active after its last call (0: lower ones never yield).
        self._window = self.settings.priority_window
        #: Until when a call above the default level keeps plain calls in the former.
        self._high_until = -math.inf
        self.stats = BatchStats()
        self._plain: deque[_Entry] = deque()
        self._loop = asyncio.get_running_loop()
        self._create_future = self._loop.create_future
        #: Whether the loop's futures are asyncio's own (see :data:`_set_result`).
        self._c_futures = type(self._loop.create_future()) is asyncio.Future
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        #: Added to a timer's delay on a loop whose clock moves in steps (uvloop's, of a
        #: millisecond, may fire a timer up to a step early by this batcher's clock,
        #: which would then set it again and again until the time came).
        self._timer_slack = 0.0 if isinstance(self._loop, asyncio.BaseEventLoop) else 0.001
        self._tasks: set[asyncio.Task[None]] = set()
        self._shut = False
        #: Whether plain calls may wait in the FIFO at all (no batch key; not shut).
        self._plain_open = key is None

    def snapshot(self) -> dict[str, Any]:
        """What :meth:`mcphost.host.Host.batching` shows of this tool."""
        st = self.stats
        return {
            "calls": self.calls,
            "batches": st.batches,
            "items": st.items,
            "largest_batch": st.largest,
            "reasons": dict(st.reasons),
            "rejected": dict(st.rejected),
            "queued": self.queued,
            "in_flight": self.in_flight,
            "size_allowed": self.model.size_for(self.target_latency),
            "max_batch_size": self.settings.max_batch_size,
            "default_priority": self.default_priority,
        }

    @property
    def calls(self) -> int:
        """Calls made to the tool through the batcher (its stats count the plain calls
        when they leave the FIFO)."""
        return self.stats.calls + len(self._plain)

    @property
    def queued(self) -> int:
        """Calls waiting for a batch (cancelled ones may count until they are reached)."""
        return len(self._plain) + len(self.former)

    @property
    def busy(self) -> bool:
        """Calls queued or batches running."""
        return bool(self.in_flight or self.queued)

    # -- the caller's side ---------------------------------------------------------
    def call(
        self,
        args: dict[str, Any],
        timeout: float,
        priority: int | None = None,
        stats: RouteStats | None = None,
    ) -> Awaitable[Any]:
        """Run the tool for ``args`` (its batch parameter a list), maybe with others:
        what to await for the result. A refusal comes when it is awaited, as any error.
        ``stats``: the counts of the route the call came by, where the batcher counts
        it (begun now, and its outcome once it is answered, a batch's calls at once).

        Not a coroutine: a plain call queued behind a running batch is awaited as its
        bare future, and a lone call as :meth:`_alone` itself, with no frame between
        the caller and either (this runs once per call, the rest once per batch)."""
        items = args.get(self.param)
        if (
            priority is None
            and type(items) is list
            and len(items) == 1
            and len(args) == 1
            and self._plain_open
            and not self._formed
            and type(items[0]) in _SCALARS
        ):
            # The most common call of all: one small item at the default level, with
            # nothing to group by. While a batch runs or plain calls wait, and no call
            # above the default level is about, it waits in the FIFO (see the module's
            # docstring); it is counted in the batcher's calls when it leaves it. These
            # are the steps of _call's plain branch, inlined as this runs once per call:
            # keep the two alike.
            plain = self._plain
            in_flight = self.in_flight
            if in_flight or plain:
                now = _clock()
                waiting = len(plain)
                if now >= self._high_until and waiting < self._plain_limit:
                    future = self._create_future()
                    deadline = now + timeout
                    plain.append((future, args, 1, deadline, now, self.default_priority, stats))
                    if stats is not None:
                        stats.begun += 1
                    if in_flight < self.max_in_flight:
                        if (
                            waiting + 1 >= (self._sized or self._full_size())
                            # balanced(waiting + 1, self._in_hand, self.max_in_flight):
                            or (waiting + 1) * (self.max_in_flight - 1) >= self._in_hand
                        ):
                            self._kick()
                        elif not waiting:
                            self._arm(min(now + self.settings.max_queue_delay, deadline))
                        elif deadline < self._timer_at:
                            self._arm(deadline)
                    elif deadline < self._timer_at:
                        # Its time may run out before those ahead of it leave.
                        self._arm(deadline)
                    return future
        return self._call(args, items, timeout, priority, stats)

    def _call(
        self,
        args: dict[str, Any],
        items: Any,
        timeout: float,
        priority: int | None,
        stats: RouteStats | None,
    ) -> Awaitable[Any]:
        """:meth:`call` for every call but a plain one of one scalar item."""
        if type(items) is not list and not isinstance(items, list):
            sent = self._dispatch(args, timeout, None)  # the worker says what is wrong
            return sent if stats is None else _counted(sent, stats)
        if self._shut:
            return self._failed(self._closed_error(), stats)
        if self.key is None:
            route = None
        else:
            try:
                route = self.key(args)
            except MCPHostError as exc:
                return self._failed(exc, stats)
        self.stats.calls += 1
        plain = self._plain
        in_flight = self.in_flight
        if not in_flight and not plain and not self._formed:
            if priority is None:
                return self._alone(args, len(items), timeout, route, self.default_priority, stats)
            level = self._level(priority)
            if self._window:
                self._arrived(level, _clock())
            return self._alone(args, len(items), timeout, route, level, stats)
        now = _clock()
        n = len(items)
        if priority is None and n == 1 and type(items[0]) in _SCALARS:
            # The most common call of all: one small item at the default level.
            level, small = self.default_priority, True
        else:
            level = self.default_priority if priority is None else self._level(priority)
            small = (n == 1 and type(items[0]) in _SCALARS) or not is_large(
                items, self.large_item_bytes
            )
        if (
            small
            and level == self.default_priority
            and len(args) == 1
            and route is None
            and not self._formed
            and now >= self._high_until
        ):
            # A plain call: it waits in the FIFO (see the module's docstring). The same
            # steps as the plain path inlined in call().
            waiting = len(plain)
            if waiting >= self._plain_limit:
                return self._failed(self._full(level), stats)
            self.stats.calls -= 1  # counted again when it leaves the FIFO
            future = self._create_future()
            deadline = now + timeout
            plain.append((future, args, n, deadline, now, level, stats))
            if stats is not None:
                stats.begun += 1
            if in_flight < self.max_in_flight:
                if waiting + 1 >= (self._sized or self._full_size()) or balanced(
                    waiting + 1, self._in_hand, self.max_in_flight
                ):
                    self._kick()
                elif not waiting:
                    self._arm(min(now + self.settings.max_queue_delay, deadline))
                elif deadline < self._timer_at:
                    self._arm(deadline)
            elif deadline < self._timer_at:
                self._arm(deadline)
            return future
        queued = self._queue(args, n, timeout, level, now, 0 if small else 1, route)
        return queued if stats is None else _counted(queued, stats)

    def _failed(self, error: BaseException, stats: RouteStats | None) -> asyncio.Future[Any]:
        """A call refused at once: a future holding its error."""
        if stats is not None:
            stats.refused(error)
        future = self._loop.create_future()
        future.set_exception(error)
        return future

    def _arrived(self, level: int, now: float) -> None:
        """A call of ``level`` came: its level is active for the window from now."""
        self.former.arrived(level, now)
        if level < self.default_priority:
            self._high_until = max(self._high_until, now + self._window)

    def _level(self, priority: int) -> int:
        """The level of a call that asked for ``priority`` (levels beyond the last are
        the last)."""
        return min(max(priority, 0), len(self.settings.levels) - 1)

    @property
    def target_latency(self) -> float | None:
        """The latency a batch should keep within (None: batches as large as allowed)."""
        return self._target_latency

    @target_latency.setter
    def target_latency(self, value: float | None) -> None:
        self._target_latency = value
        self._sized = None

    def _full_size(self) -> int:
        """How many plain calls make a full batch; kept until a batch is observed or the
        target changes (it is asked once per queued call)."""
        if self._sized is None:
            self._sized = self.former.full_size(self.model.size_for(self._target_latency))
        return self._sized

    def _full(self, level: int) -> Busy:
        self.stats.rejected["queue_full"] = self.stats.rejected.get("queue_full", 0) + 1
        return Busy(
            f"{self.tool}: the batch queue of priority {level} is full "
            f"({self.settings.levels[level].max_queue_size} calls wait); try again later, "
            "or raise batching.max_queue_size",
            data={"tool": self.tool, "priority": level, "reason": "queue_full"},
        )

    def _promote(self) -> None:
        """Move the plain calls into the former, in their order, at the default level."""
        while self._plain:
            e = self._plain.popleft()
            self.stats.calls += 1
            future, args, count, deadline, enqueued = e[:5]
            if future.done():
                _count(e, _GONE)
                continue
            p = _Waiting(
                id=next(_ids), level=self.default_priority, enqueued=enqueued, deadline=deadline
            )
            p.future, p.args, p.count, p.stats = future, args, count, e[6]
            self.former.submit(p, enqueued)

    async def _queue(
        self,
        args: dict[str, Any],
        count: int,
        timeout: float,
        level: int,
        now: float,
        lane: int,
        route: str | None = None,
    ) -> Any:
        self._promote()
        key: Any = None
        if len(args) > 1:
            rest = {k: v for k, v in args.items() if k != self.param}
            key = json.dumps(rest, sort_keys=True, default=str)
        if route is not None:
            key = (key, route)
        p = _Waiting(
            id=next(_ids), level=level, enqueued=now, deadline=now + timeout, key=key, lane=lane
        )
        p.future = self._loop.create_future()
        p.args, p.count, p.stats = args, count, None
        former = self.former
        if former.submit(p, now) is not None:
            raise self._full(p.level)
        if self._window and level < self.default_priority:
            self._high_until = max(self._high_until, now + self._window)
        # Only what this call changes is looked at: with a batch running and room for
        # another, its group may now be full, or nothing of its level or above runs
        # (lower levels yield); otherwise a timer must not miss it.
        if not self.in_flight:
            self._kick()
        elif self.in_flight < self.max_in_flight:
            if (
                former.full(p, self.model.size_for(self.target_latency))
                or balanced(former.held(p), self._in_hand, self.max_in_flight)
                or (self._window and not any(self._running[: p.level + 1]))
            ):
                self._kick()
            else:
                self._arm(former.due(p, self._expect))
        else:
            self._arm(min(p.deadline, p.expires))
        try:
            return await p.future
        except asyncio.CancelledError:
            if former.cancel(p.id):
                self._kick()
            raise

    async def _alone(
        self,
        args: dict[str, Any],
        n: int,
        timeout: float,
        route: str | None,
        level: int,
        counts: RouteStats | None = None,
    ) -> Any:
        self.in_flight += 1
        self._in_hand += 1
        running = self._running
        running[level] += 1
        stats = self.stats
        stats.reasons["alone"] += 1
        t0 = _clock()
        if counts is not None:
            counts.begun += 1
        try:
            try:
                result = await self._dispatch(args, timeout, route)
            finally:
                self.in_flight -= 1
                self._in_hand -= 1
                running[level] -= 1
                if self._plain or self._formed:
                    self._kick()
            self.model.observe(n, _clock() - t0, self._target_latency)
            self._sized = None
            if not isinstance(result, list) or len(result) != n:
                raise self._miscounted(result, n)
            stats.sizes[bisect_left(SIZE_BUCKETS, n)] += 1
            stats.size_sum += n
            if type(result) is BatchResults:
                raise result.error(min(result.errors))
        except BaseException as exc:
            if counts is not None:
                counts.failed(t0, exc)
            raise
        if counts is not None:
            counts.done(t0)
        return result

    def _miscounted(self, result: Any, n: int) -> PluginError:
        got = f"{len(result)} results" if isinstance(result, list) else type(result).__name__
        return PluginError(
            f"{self.tool} is a batch tool and returned {got} for {n} items; a batch tool "
            "must return one result per item, in order",
            data={"tool": self.tool},
        )

    # -- forming and sending batches ----------------------------------------------
    def _kick(self) -> None:
        if self._shut:
            return
        if self._plain:
            self._kick_plain()
            return
        if not self._formed:
            return  # nothing waits
        now = _clock()
        for p, why in self.former.expire(now):
            w: _Waiting = p  # type: ignore[assignment]
            self._refuse(w.future, why, w.level, w.stats, w.enqueued)
        limit = self.model.size_for(self.target_latency)
        short = self.model.yield_size()
        running, slots = self._running, self.max_in_flight
        # No batch running: what waits goes at once. Some running, with room for more:
        # a group goes once full or once its first call has waited long enough (calls of
        # a higher level than every batch running go at once). No room: calls wait
        # here, in priority order, for a running batch to end.
        while self.in_flight < slots:
            batch = self.former.take(
                now,
                running=running,
                slots=slots,
                limit=limit,
                expect=self._expect,
                short=short,
                in_hand=self._in_hand,
            )
            if batch is None:
                break
            calls: list[_Waiting] = batch.items  # type: ignore[assignment]
            self._launch(
                [
                    (p.future, p.args, p.count, p.deadline, p.enqueued, p.level, p.stats)
                    for p in calls
                ],
                batch.reason,
                min(p.level for p in calls),
            )
        when = self.former.wakeup(
            self._expect, limit, now=now, running=running, slots=slots, short=short
        )
        if when is not None:
            self._arm(when)

    def _kick_plain(self) -> None:
        """:meth:`_kick` while only plain calls wait: the same rules on one FIFO."""
        plain = self._plain
        now = _clock()
        size = self._full_size()
        delay = self.settings.max_queue_delay
        while plain and self.in_flight < self.max_in_flight:
            first = plain[0]
            if self.in_flight == 0:
                reason: Reason = "idle"
            elif len(plain) >= size:
                reason = "size"
            elif balanced(len(plain), self._in_hand, self.max_in_flight):
                reason = "balance"
            elif now >= min(first[4] + delay, first[3] - self._expect(len(plain))):
                reason = "deadline"
            else:
                break
            level = self.default_priority
            if len(plain) <= size:
                taken = list(plain)
                plain.clear()
            else:
                popleft = plain.popleft
                taken = [popleft() for _ in range(size)]
            self.stats.calls += len(taken)
            # Calls whose caller went away, or whose time ran out, do not go.
            if min(map(_deadline_of, taken)) > now and not any(
                map(_is_done, map(_future_of, taken))
            ):
                entries = taken
            else:
                entries = []
                for e in taken:
                    if e[0].done():
                        _count(e, _GONE)
                    elif e[3] <= now:
                        self._refuse(e[0], "deadline", level, e[6], e[4])
                    else:
                        entries.append(e)
            if entries:
                self._launch(entries, reason, level, plain=True)
        if not plain:
            return
        # Calls whose time ran out while no batch could leave, wherever they wait (a
        # call may come with a shorter timeout than those ahead of it).
        soonest = min(map(_deadline_of, plain))
        if soonest <= now:
            kept = []
            for e in plain:
                if e[0].done():
                    self.stats.calls += 1
                    _count(e, _GONE)
                elif e[3] <= now:
                    self.stats.calls += 1
                    self._refuse(e[0], "deadline", self.default_priority, e[6], e[4])
                else:
                    kept.append(e)
            plain.clear()
            plain.extend(kept)
            if not plain:
                return
            soonest = min(map(_deadline_of, plain))
        first = plain[0]
        if self.in_flight < self.max_in_flight:
            self._arm(min(first[4] + delay, first[3] - self._expect(len(plain)), soonest))
        else:
            self._arm(soonest)

    def _launch(
        self, entries: list[_Entry], reason: Reason, level: int, plain: bool = False
    ) -> None:
        """Send ``entries`` as one batch; ``level``: its best call's. ``plain``: they
        are plain calls in the order they came (one level, the oldest first)."""
        self.in_flight += 1
        self._in_hand += len(entries)
        self._running[level] += 1
        stats = self.stats
        stats.batches += 1
        stats.reasons[reason] += 1
        if plain:
            stats.waited_in_order(level, list(map(_enqueued_of, entries)), _clock())
        else:
            stats.waited_all(entries, _clock())
        task = self._loop.create_task(self._run(entries, level))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _arm(self, when: float) -> None:
        """Look again at ``when`` at the latest (a timer that fires early just looks)."""
        if when >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        delay = when - _clock()
        self._timer = self._loop.call_later(
            delay + self._timer_slack if delay > 0 else 0.0, self._on_timer
        )

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, math.inf
        self._kick()

    def _expect(self, n: int) -> float:
        return self.model.predict(n)

    def _refuse(
        self,
        future: asyncio.Future[Any],
        why: str,
        level: int,
        stats: RouteStats | None,
        started: float,
    ) -> None:
        self.stats.rejected[why] = self.stats.rejected.get(why, 0) + 1
        error: BaseException
        if future.done():
            error = _GONE
        elif why == "deadline":
            error = ToolTimeout(
                f"{self.tool}: the call's time ran out while it waited for a batch",
                data={"tool": self.tool},
            )
            future.set_exception(error)
        else:
            error = Busy(
                f"{self.tool}: the call waited its priority's queue timeout out before a "
                "batch took it; try again later",
                data={"tool": self.tool, "priority": level, "reason": why},
            )
            future.set_exception(error)
        if stats is not None:
            stats.failed(started, error)

    async def _run(self, entries: list[_Entry], level: int) -> None:
        param = self.param
        lists = list(map(itemgetter(param), map(_args_of, entries)))
        counts = list(map(_count_of, entries))
        # Every call one item (the common case): items and results pair one to one.
        ones = counts.count(1) == len(counts)
        if ones:
            joined = list(map(_first, lists))
        else:
            joined = []
            for items in lists:
                joined.extend(items)
        latest = max(map(_deadline_of, entries))
        args = {**entries[0][1], param: joined}
        timeout = latest - _clock()
        t0 = _clock()
        try:
            if timeout <= 0:
                raise ToolTimeout(f"{self.tool}: the batch's time ran out before it left")
            # Every call of a batch has the same key: the first one's is the batch's.
            route = None if self.key is None else self.key(entries[0][1])
            result = await self._dispatch(args, timeout, route)
        except asyncio.CancelledError:
            for e in entries:
                if not e[0].done():
                    e[0].cancel()
                _count(e, _GONE)
            raise
        except MCPHostError as exc:
            self._fail(entries, exc)
            return
        except Exception as exc:  # a bug below: every caller learns of it
            self._fail(entries, PluginError(f"{self.tool}: batch failed: {exc!r}"))
            return
        finally:
            self.in_flight -= 1
            self._in_hand -= len(entries)
            self._running[level] -= 1
            self._kick()
        self._observe(len(joined), _clock() - t0)
        if not isinstance(result, list) or len(result) != len(joined):
            self._fail(entries, self._miscounted(result, len(joined)))
            return
        stats = self.stats
        stats.items += len(joined)
        stats.largest = max(stats.largest, len(joined))
        stats.sizes[bisect_left(SIZE_BUCKETS, len(joined))] += 1
        stats.size_sum += len(joined)
        if ones and type(result) is not BatchResults:
            futures = list(map(_future_of, entries))
            if self._c_futures and not any(map(_is_done, futures)):
                _consume(map(_set_result, futures, map(list, zip(result))))
                _answered(entries)
                return
            for e, item in zip(entries, result, strict=True):
                if not e[0].done():
                    e[0].set_result([item])
                    _count(e, None)
                else:
                    _count(e, _GONE)
            return
        offset = 0
        if type(result) is BatchResults:
            # Some items failed on their own: their callers get their errors.
            for e in entries:
                future, count = e[0], e[2]
                if future.done():
                    _count(e, _GONE)
                else:
                    failed = result.first_failed(offset, offset + count)
                    if failed is None:
                        future.set_result(result[offset : offset + count])
                        _count(e, None)
                    else:
                        error = result.error(failed, failed - offset)
                        future.set_exception(error)
                        _count(e, error)
                offset += count
            return
        for e in entries:
            future, count = e[0], e[2]
            if future.done():
                _count(e, _GONE)
            else:
                future.set_result(result[offset : offset + count])
                _count(e, None)
            offset += count

    @staticmethod
    def _fail(entries: list[_Entry], error: BaseException) -> None:
        for e in entries:
            if e[0].done():
                _count(e, _GONE)
            else:
                e[0].set_exception(error)
                _count(e, error)

    def _observe(self, n: int, seconds: float) -> None:
        self.model.observe(n, seconds, self._target_latency)
        self._sized = None

    def shut(self) -> None:
        """Take no more calls; the queued ones fail (the host is closing). Batches
        running end as their workers answer or stop."""
        self._shut = True
        self._plain_open = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        entries = list(self._plain)
        self._plain.clear()
        self.stats.calls += len(entries)
        for p, _ in self.former.expire(math.inf):
            w: _Waiting = p  # type: ignore[assignment]
            entries.append((w.future, w.args, w.count, w.deadline, w.enqueued, w.level, w.stats))
        self._fail(entries, self._closed_error())

    def _closed_error(self) -> PluginError:
        return PluginError(
            f"{self.tool}: the host closed before the call was sent to a worker",
            data={"tool": self.tool},
        )

    async def close(self) -> None:
        """:meth:`shut`, then wait for the batches running."""
        self.shut()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
