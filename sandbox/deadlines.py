"""Deadlines of many calls on one event-loop timer.

A timer per call (``loop.call_later``) costs a handle, a push onto the loop's heap and a
cancellation for every call, and the loop's heap fills with cancelled handles when calls
are many and short. :class:`Deadlines` keeps one heap of ``(when, call id)`` and one loop
timer, set for the earliest deadline. A call that finished is not removed: its entry is
skipped when it comes up, and the heap is pruned when such entries outnumber the calls
in flight several times over.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable, Collection

__all__ = ["Deadlines"]

#: A timer may fire this much before its time (the clock's resolution and rounding).
_SLACK = 1e-6


class Deadlines:
    """Calls ``expire(call_id)`` on the loop once a call's deadline passes, for the ids
    still in ``live`` (the caller's table of calls in flight)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        live: Collection[int],
        expire: Callable[[int], None],
    ) -> None:
        self._loop = loop
        self._live = live
        self._expire = expire
        self._heap: list[tuple[float, int]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def add(self, when: float, call_id: int) -> None:
        """Expire ``call_id`` at ``when`` (in ``loop.time()``) unless it has finished."""
        heap = self._heap
        if len(heap) > 4 * len(self._live) + 1024:
            live = self._live
            heap[:] = [e for e in heap if e[1] in live]
            heapq.heapify(heap)
        heapq.heappush(heap, (when, call_id))
        if when < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = self._loop.call_at(when, self._sweep)

    def close(self) -> None:
        """Forget every deadline and stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = math.inf
        self._heap.clear()

    def _sweep(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        heap = self._heap
        live = self._live
        now = self._loop.time() + _SLACK
        while heap:
            when, call_id = heap[0]
            if call_id not in live:
                heapq.heappop(heap)
            elif when <= now:
                heapq.heappop(heap)
                self._expire(call_id)
            else:
                self._timer_at = when
                self._timer = self._loop.call_at(when, self._sweep)
                return
