"""High and low watermarks of one stream's buffer toward its consumer.

:class:`Watermarks` counts the bytes buffered: items received from the worker and not
yet taken by the consumer, plus what a front end says it holds for a slow client
(:meth:`Watermarks.hold` / :meth:`Watermarks.release`). Above ``high`` it is *paused*:
the host stops crediting the worker (a backpressure event); at or below ``low`` it
resumes and calls ``resume`` (the worker client credits what it owes). Between the
two it keeps its state, so a buffer hovering at one mark does not flap.

Admission may also *suspend* a stream (:meth:`Watermarks.suspend`): it is paused
whatever its buffer holds, to give its place to a stream of a higher priority, until
:meth:`Watermarks.unsuspend`. A suspension is not a backpressure event, and the
consumer of a suspended stream is not a slow one (``full`` tells the two apart).

It implements the worker client's :class:`~mcphost.sandbox.client.StreamGate`. No
I/O and no clock but the one given: the property tests drive it alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Watermarks"]


class Watermarks:
    """The watermark state of one stream (see the module's docstring)."""

    __slots__ = (
        "_clock",
        "_paused_at",
        "buffered",
        "fail",
        "full",
        "high",
        "last_active",
        "last_size",
        "last_taken",
        "low",
        "on_pause",
        "paused",
        "paused_seconds",
        "pauses",
        "peak",
        "resume",
        "suspended",
    )

    def __init__(
        self,
        high: int,
        low: int,
        clock: Callable[[], float] = time.monotonic,
        on_pause: Callable[[bool], None] | None = None,
    ) -> None:
        if not 0 <= low <= high:
            raise ValueError(f"watermarks must satisfy 0 <= low <= high, got {low} and {high}")
        self.high = high
        self.low = low
        self._clock = clock
        self.buffered = 0
        self.peak = 0
        #: Credit withheld: the buffer passed ``high`` (``full``), or admission
        #: suspended the stream (``suspended``), or both.
        self.paused = False
        self.full = False
        self.suspended = False
        #: Backpressure events: how often the buffer passed ``high``.
        self.pauses = 0
        self.paused_seconds = 0.0
        self._paused_at = 0.0
        #: When the consumer last took an item (or the stream began).
        self.last_taken = clock()
        #: When an item last arrived or the stream last resumed (or began): the
        #: producer is idle from then on only while it has credit.
        self.last_active = self.last_taken
        #: The size of the item the consumer took last.
        self.last_size = 0
        #: ``on_pause(True)`` when it pauses, ``on_pause(False)`` when it resumes.
        self.on_pause = on_pause
        #: Set by the worker client: credit what is owed / end the stream with an error.
        self.resume: Callable[[], None] | None = None
        self.fail: Callable[[BaseException], None] | None = None

    # -- the stream's side -----------------------------------------------------------
    def arrived(self, size: int) -> None:
        """An item of ``size`` bytes joined the buffer."""
        self.buffered += size
        self.last_active = self._clock()
        if self.buffered > self.peak:
            self.peak = self.buffered
        if not self.full and self.buffered > self.high:
            self._pause()

    def taken(self, size: int) -> None:
        """The consumer took an item of ``size`` bytes."""
        self.last_taken = self._clock()
        self.last_size = size
        self._shrink(size)

    # -- a front end's side ----------------------------------------------------------
    def hold(self, size: int) -> None:
        """A front end holds ``size`` bytes for its client (e.g. an SSE event not yet
        written): they count as buffered until :meth:`release`."""
        self.buffered += size
        if self.buffered > self.peak:
            self.peak = self.buffered
        if not self.full and self.buffered > self.high:
            self._pause()

    def release(self, size: int) -> None:
        """The client took ``size`` bytes a front end held."""
        self._shrink(size)

    # -- state -----------------------------------------------------------------------
    def _shrink(self, size: int) -> None:
        self.buffered -= size
        if self.full and self.buffered <= self.low:
            self.full = False
            now = self._clock()
            self.paused_seconds += now - self._paused_at
            self.last_active = now
            if self.on_pause is not None:
                self.on_pause(False)
            self._flow()

    def _pause(self) -> None:
        self.full = self.paused = True
        self.pauses += 1
        self._paused_at = self._clock()
        if self.on_pause is not None:
            self.on_pause(True)

    def _flow(self) -> None:
        """Credit again unless something else still holds the stream."""
        if self.paused and not (self.full or self.suspended):
            self.paused = False
            if self.resume is not None:
                self.resume()

    # -- admission's side ------------------------------------------------------------
    def suspend(self) -> None:
        """Withhold credit whatever the buffer holds (the stream's place was given to
        one of a higher priority); the producer stops once its window is used."""
        self.suspended = self.paused = True

    def unsuspend(self) -> None:
        """The stream has a place again: credit resumes unless its buffer is full."""
        if self.suspended:
            self.suspended = False
            self.last_active = self._clock()
            self._flow()

    def paused_for(self) -> float:
        """Seconds paused by backpressure in all, the current pause included."""
        if self.full:
            return self.paused_seconds + self._clock() - self._paused_at
        return self.paused_seconds
