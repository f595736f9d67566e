"""Collecting a host's events, and waiting, with a bound, for the ones a test needs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from mcphost.host import Host, HostEvent

__all__ = ["HostEvents"]


class HostEvents:
    """Every event ``host`` announces from now on (only those of ``kind`` when given).

    ``seen`` holds them in order and ``times`` the monotonic time each arrived. Create it
    on the host's loop; the ``wait_*`` methods wait for what has arrived or will."""

    def __init__(self, host: Host, kind: str | None = None) -> None:
        self.kind = kind
        self.seen: list[HostEvent] = []
        self.times: list[float] = []
        self._changed = asyncio.Event()
        self._remove = host.add_listener(self._on)

    def _on(self, event: HostEvent) -> None:
        if self.kind is None or event.kind == self.kind:
            self.seen.append(event)
            self.times.append(time.monotonic())
            self._changed.set()

    def close(self) -> None:
        """Stop collecting."""
        self._remove()

    async def _until(
        self, done: Callable[[], HostEvent | None], bound: float, what: str
    ) -> HostEvent:
        async def scan() -> HostEvent:
            while True:
                found = done()
                if found is not None:
                    return found
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(scan(), bound)
        except TimeoutError:
            raise AssertionError(
                f"no {what} within {bound}s; events seen: {[e.kind for e in self.seen]}"
            ) from None

    async def wait_for(
        self, pred: Callable[[HostEvent], bool], bound: float = 10.0, what: str = "such event"
    ) -> HostEvent:
        """The first event collected so far or later for which ``pred`` holds."""
        return await self._until(lambda: next((e for e in self.seen if pred(e)), None), bound, what)

    async def wait_count(self, count: int, bound: float = 30.0) -> HostEvent:
        """Wait until ``count`` events in all have been collected; return the last one."""
        return await self._until(
            lambda: self.seen[count - 1] if len(self.seen) >= count else None,
            bound,
            f"{count} {self.kind or 'host'} event(s)",
        )

    async def wait_more(self, more: int = 1, bound: float = 30.0) -> HostEvent:
        """Wait for ``more`` events after those collected so far; return the last one."""
        return await self.wait_count(len(self.seen) + more, bound)
