"""Admission of streams: at most so many run at once, the others wait by priority.

:class:`AdmissionQueue` is the decision alone (no I/O, no clock of its own): waiters
with a priority and the time they arrived; :meth:`AdmissionQueue.pick` chooses the one
to admit next. Priorities are as for batch calls: 0 is the highest, and a larger number
waits behind a smaller one. A waiter's effective priority moves one level up (one less)
for every ``aging`` seconds it has waited, so a low priority is never starved: it climbs
past any newcomer in bounded time. Within one effective priority the earliest comes first (FIFO
within a level). A waiter whose plugin is at its own limit is passed over, not removed.

:class:`Admission` is the asyncio face: :meth:`Admission.admit` returns a
:class:`Ticket` at once when there is room and nobody waits, else waits its turn, or
fails with :class:`~mcphost.sdk.errors.Busy` after the admission timeout. Limits are
read at every decision, so a changed setting applies to the next admission; a lowered
limit lets running streams finish and admits no one until they fall below it.

Places are not held for ever by whoever came first: with ``preempt`` on, a caller of a
higher priority (by the priority it asked for, not by aging) that finds no place takes
the place of the running stream of the lowest priority below its own (the most recent
of those), which is *suspended*: its producer gets no more credit until a place frees,
and it gets that place before any waiter that is not of a higher priority than its own.
So a high-priority stream waits for nothing a lower one holds, and a suspended stream
costs only what its window already holds. Only tickets that say how to suspend them
(``Ticket.suspend``/``Ticket.resume``) can be suspended.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from mcphost.sdk.errors import Busy

__all__ = ["Admission", "AdmissionLimits", "AdmissionQueue", "Ticket", "Waiter"]

#: Seconds between looks at the limits while streams wait (a limit raised live admits
#: them without waiting for a stream to end).
RECHECK = 0.25


class AdmissionLimits(NamedTuple):
    """The settings admission reads at each decision."""

    max_concurrent: int
    max_concurrent_per_plugin: int
    timeout: float
    aging: float
    preempt: bool = False


class Waiter:
    """One caller waiting for admission."""

    __slots__ = ("arrived", "future", "plugin", "priority", "seq", "tool")

    def __init__(self, seq: int, plugin: str, tool: str, priority: int, arrived: float) -> None:
        self.seq = seq
        self.plugin = plugin
        self.tool = tool
        self.priority = priority
        self.arrived = arrived
        self.future: asyncio.Future[Ticket] | None = None

    def effective(self, now: float, aging: float) -> float:
        """Its priority raised (made smaller) by one level per ``aging`` seconds waited."""
        return self.priority - (now - self.arrived) / aging


class AdmissionQueue:
    """Who runs and who waits; the order of admission (see the module's docstring)."""

    def __init__(self) -> None:
        self.waiting: dict[int, Waiter] = {}
        self.running = 0
        self.per_plugin: dict[str, int] = {}
        self._seq = itertools.count()

    def add(self, plugin: str, tool: str, priority: int, now: float) -> Waiter:
        w = Waiter(next(self._seq), plugin, tool, priority, now)
        self.waiting[w.seq] = w
        return w

    def remove(self, w: Waiter) -> None:
        self.waiting.pop(w.seq, None)

    def has_room(self, plugin: str, limit: int, per_plugin: int) -> bool:
        return self.running < limit and self.per_plugin.get(plugin, 0) < per_plugin

    def start(self, plugin: str) -> None:
        self.running += 1
        self.per_plugin[plugin] = self.per_plugin.get(plugin, 0) + 1

    def finish(self, plugin: str) -> None:
        self.running -= 1
        n = self.per_plugin.get(plugin, 0) - 1
        if n > 0:
            self.per_plugin[plugin] = n
        else:
            self.per_plugin.pop(plugin, None)

    @staticmethod
    def _key(w: Waiter, now: float, aging: float) -> tuple[float, int]:
        # Highest effective priority (the smallest number) first, then earliest arrival.
        return (w.effective(now, aging), w.seq)

    def take(self, w: Waiter) -> None:
        """Admit ``w`` out of turn (a place was just made for it)."""
        del self.waiting[w.seq]
        self.start(w.plugin)

    def pick(self, now: float, limit: int, per_plugin: int, aging: float) -> Waiter | None:
        """The waiter to admit now (taken out of the queue and counted as running), or
        None when nobody waits or nobody waiting has room."""
        if self.running >= limit:
            return None
        best: Waiter | None = None
        best_key: tuple[float, int] | None = None
        for w in self.waiting.values():
            if self.per_plugin.get(w.plugin, 0) >= per_plugin:
                continue
            key = self._key(w, now, aging)
            if best_key is None or key < best_key:
                best, best_key = w, key
        if best is not None:
            del self.waiting[best.seq]
            self.start(best.plugin)
        return best

    def ahead_of(self, w: Waiter, now: float, aging: float) -> int:
        """How many waiters would be admitted before ``w``."""
        mine = self._key(w, now, aging)
        return sum(
            1 for o in self.waiting.values() if o is not w and self._key(o, now, aging) < mine
        )

    def order(self, now: float, aging: float) -> list[Waiter]:
        """The waiters in the order they would be admitted if there were room for all."""
        return sorted(self.waiting.values(), key=lambda w: self._key(w, now, aging))


class Ticket:
    """A running stream's place; :meth:`Admission.release` gives it back (once).

    The stream's owner sets ``suspend`` and ``resume`` to let admission give its place
    to a stream of a higher priority for a while (see the module's docstring)."""

    __slots__ = (
        "admitted_at",
        "plugin",
        "priority",
        "released",
        "resume",
        "suspend",
        "suspended",
        "suspensions",
        "tool",
        "waited",
    )

    def __init__(self, plugin: str, tool: str, priority: int, waited: float) -> None:
        self.plugin = plugin
        self.tool = tool
        self.priority = priority
        self.waited = waited
        self.admitted_at = time.monotonic()
        self.released = False
        self.suspend: Callable[[], None] | None = None
        self.resume: Callable[[], None] | None = None
        #: Waiting for a place again after giving its own to a higher priority.
        self.suspended = False
        #: How many times it gave its place up.
        self.suspensions = 0


class Admission:
    """Admits streams by priority up to the limits ``limits()`` returns at each decision."""

    def __init__(
        self,
        limits: Callable[[], AdmissionLimits],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = limits
        self._clock = clock
        self.queue = AdmissionQueue()
        self._timer: asyncio.TimerHandle | None = None
        #: Tickets holding a place, and tickets suspended to make one (in that order).
        self._holding: set[Ticket] = set()
        self._suspended: list[Ticket] = []

    @property
    def suspended(self) -> int:
        return len(self._suspended)

    @property
    def running(self) -> int:
        return self.queue.running

    @property
    def waiting(self) -> int:
        return len(self.queue.waiting)

    async def admit(self, plugin: str, tool: str, priority: int) -> Ticket:
        """A place to run: at once if there is room and nobody waits, else in turn.
        Raises :class:`Busy` after the admission timeout (how long it waited, how many
        were ahead of it); a caller cancelled while waiting leaves the queue."""
        lim = self._limits()
        q = self.queue
        if (
            not q.waiting
            and not self._suspended
            and q.has_room(plugin, lim.max_concurrent, lim.max_concurrent_per_plugin)
        ):
            q.start(plugin)
            ticket = Ticket(plugin, tool, priority, 0.0)
            self._holding.add(ticket)
            return ticket
        now = self._clock()
        w = q.add(plugin, tool, priority, now)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Ticket] = loop.create_future()
        w.future = fut
        # A waiter may have room even with others waiting (they wait on their plugin).
        self._dispatch()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), lim.timeout)
        except TimeoutError:
            if fut.done():  # admitted in the same turn the time ran out
                return fut.result()
            ahead = q.ahead_of(w, self._clock(), lim.aging)
            q.remove(w)
            fut.cancel()
            waited = self._clock() - now
            raise Busy(
                f"{tool}: no stream place within streaming.admission_timeout "
                f"({lim.timeout:g}s): waited {waited:.2f}s with {ahead} ahead and "
                f"{q.running} running (max_concurrent {lim.max_concurrent}, "
                f"max_concurrent_per_plugin {lim.max_concurrent_per_plugin}); try again "
                "later, or raise those limits in [streaming]",
                data={
                    "tool": tool,
                    "waited": round(waited, 3),
                    "ahead": ahead,
                    "running": q.running,
                    "max_concurrent": lim.max_concurrent,
                    "max_concurrent_per_plugin": lim.max_concurrent_per_plugin,
                },
            ) from None
        except asyncio.CancelledError:
            q.remove(w)
            if fut.done() and not fut.cancelled():
                self.release(fut.result())  # admitted, but the caller has gone
            fut.cancel()
            raise

    def release(self, ticket: Ticket) -> None:
        """The stream ended: its place goes to the next waiter (a suspended stream
        that ends holds none)."""
        if ticket.released:
            return
        ticket.released = True
        if ticket.suspended:
            self._suspended.remove(ticket)
        else:
            self._holding.discard(ticket)
            self.queue.finish(ticket.plugin)
        self._dispatch()

    def _dispatch(self) -> None:
        lim = self._limits()
        q = self.queue
        while q.waiting or self._suspended:
            now = self._clock()
            if self._resume_one(lim):
                continue
            w = q.pick(now, lim.max_concurrent, lim.max_concurrent_per_plugin, lim.aging)
            if w is None and lim.preempt:
                w = self._preempt_for(lim)
            if w is None:
                break
            fut = w.future
            if fut is None or fut.done():  # left meanwhile: give the place back
                q.finish(w.plugin)
                continue
            ticket = Ticket(w.plugin, w.tool, w.priority, now - w.arrived)
            self._holding.add(ticket)
            fut.set_result(ticket)
        self._watch_limits()

    def _resume_one(self, lim: AdmissionLimits) -> bool:
        """Give a place back to the suspended stream of the highest priority that has
        room (the earliest suspended of those), unless a waiter of a higher priority could
        take that place; True when one resumed."""
        q = self.queue
        best = None
        # The list is in the order of suspension; sorted() keeps it within a priority.
        for t in sorted(self._suspended, key=lambda t: t.priority):
            if q.has_room(t.plugin, lim.max_concurrent, lim.max_concurrent_per_plugin):
                best = t
                break
        if best is None or any(
            w.priority < best.priority
            and q.has_room(w.plugin, lim.max_concurrent, lim.max_concurrent_per_plugin)
            for w in q.waiting.values()
        ):
            return False
        self._suspended.remove(best)
        best.suspended = False
        q.start(best.plugin)
        self._holding.add(best)
        if best.resume is not None:
            best.resume()
        return True

    def _preempt_for(self, lim: AdmissionLimits) -> Waiter | None:
        """Make a place for the waiter of the highest asked-for priority by suspending
        the running stream of the lowest priority below it (the most recent of those),
        and admit that waiter into it; None when no stream can make way."""
        q = self.queue
        movable = [t for t in self._holding if t.suspend is not None]
        if not movable:
            return None
        lowest = max(t.priority for t in movable)
        # Waiters in the order of their asked-for priority: the first one some stream
        # can make way for (one whose plugin is at its limit needs a stream of its own).
        for w in sorted(q.waiting.values(), key=lambda o: (o.priority, o.seq)):
            if w.priority >= lowest:
                return None
            same_plugin = q.per_plugin.get(w.plugin, 0) >= lim.max_concurrent_per_plugin
            if not same_plugin and q.running - 1 >= lim.max_concurrent:
                continue  # over a lowered limit: one place made is not enough
            victims = [
                t
                for t in movable
                if t.priority > w.priority and (not same_plugin or t.plugin == w.plugin)
            ]
            if victims:
                break
        else:
            return None
        victim = max(victims, key=lambda t: (t.priority, t.admitted_at))
        self._holding.discard(victim)
        q.finish(victim.plugin)
        victim.suspended = True
        victim.suspensions += 1
        self._suspended.append(victim)
        assert victim.suspend is not None
        victim.suspend()
        if not q.has_room(w.plugin, lim.max_concurrent, lim.max_concurrent_per_plugin):
            return None  # cannot happen: the place made was of the kind it lacked
        q.take(w)
        return w

    def _watch_limits(self) -> None:
        """While streams wait, look at the limits again now and then: one raised live
        admits them without waiting for a stream to end."""
        if self._timer is None and (self.queue.waiting or self._suspended):
            self._timer = asyncio.get_running_loop().call_later(RECHECK, self._recheck)

    def _recheck(self) -> None:
        self._timer = None
        self._dispatch()

    def snapshot(self) -> list[dict[str, Any]]:
        """The admission queue in admission order: tool, plugin, priority, seconds waited
        (suspended streams are listed with the active ones, by their owner)."""
        now = self._clock()
        aging = self._limits().aging
        return [
            {
                "tool": w.tool,
                "plugin": w.plugin,
                "priority": w.priority,
                "age": round(now - w.arrived, 3),
                "state": "queued",
            }
            for w in self.queue.order(now, aging)
        ]
