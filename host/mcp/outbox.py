"""What is on its way to one client, bounded in bytes.

A client that reads slowly, or not at all, must not make the server buffer without
bound. Every transport writes through an :class:`Outbox`:

* answers (JSON-RPC responses, a call's output) wait for room with :meth:`Outbox.put`,
  so a slow client slows the call that produced them: backpressure, nothing lost;
* notifications never wait. Once the outbox is half full, one sent with a ``key`` (a
  progress token) replaces an unsent one with the same key, since only the newest
  progress matters to a client that has fallen behind; any other that
  does not fit is dropped and counted, and the count goes out as one notice (made by
  ``dropped_notice``) in the place of the first line lost.

A single frame larger than the whole limit still goes out when the outbox is empty, so
nothing deadlocks; the limit bounds what waits, not what is sent.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Hashable

__all__ = ["DEFAULT_OUTBOX_BYTES", "Outbox"]

#: Bytes a client may have waiting before notifications drop and answers wait.
DEFAULT_OUTBOX_BYTES = 1 << 20


_NOTICE = object()  # the key of the place in the queue where the drop notice goes


class _Entry:
    __slots__ = ("data", "key")

    def __init__(self, data: bytes, key: Hashable | None) -> None:
        self.data = data
        self.key = key


class Outbox:
    """A queue of frames toward one client, bounded in bytes (see the module doc)."""

    def __init__(
        self,
        limit: int = DEFAULT_OUTBOX_BYTES,
        *,
        dropped_notice: Callable[[int], bytes] | None = None,
    ) -> None:
        if limit <= 0:
            raise ValueError(f"an outbox needs a positive limit in bytes, not {limit}")
        self.limit = limit
        #: Notifications dropped for want of room, in all (never reset).
        self.dropped = 0
        self._unreported = 0
        self._marked = False
        self._notice = dropped_notice
        self._entries: collections.deque[_Entry] = collections.deque()
        self._keyed: dict[Hashable, _Entry] = {}
        self._size = 0
        self._closed = False
        self._readable = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    @property
    def size(self) -> int:
        """Bytes waiting to be sent."""
        return self._size

    @property
    def closed(self) -> bool:
        return self._closed

    def _fits(self, n: int) -> bool:
        return self._size + n <= self.limit or not self._entries

    def _append(self, entry: _Entry) -> None:
        self._entries.append(entry)
        self._size += len(entry.data)
        if entry.key is not None:
            self._keyed[entry.key] = entry
        self._readable.set()
        if self._size >= self.limit:
            self._room.clear()

    def notify(self, data: bytes, key: Hashable | None = None) -> None:
        """Queue a notification without waiting: coalesce it by ``key`` (when half
        full), or drop it (and count it) when there is no room."""
        if self._closed:
            return
        if key is not None and self._size >= self.limit // 2:
            # Only a client falling behind loses steps: one that keeps up sees them all.
            old = self._keyed.get(key)
            if old is not None:
                self._size += len(data) - len(old.data)
                old.data = data
                return
        if not self._fits(len(data)):
            self.dropped += 1
            self._unreported += 1
            if self._notice is not None and not self._marked:
                # Where the first lost line would have gone: the notice takes its place.
                self._marked = True
                self._entries.append(_Entry(b"", _NOTICE))
                self._readable.set()
            return
        self._append(_Entry(data, key))

    async def put(self, data: bytes) -> None:
        """Queue an answer, waiting while the outbox is full. Returns at once, sending
        nothing, once the outbox is closed (the client is gone)."""
        while not self._closed and not self._fits(len(data)):
            self._room.clear()
            await self._room.wait()
        if not self._closed:
            self._append(_Entry(data, None))

    async def get(self) -> bytes | None:
        """The next frame to send, waiting for one; None once closed and empty."""
        while not self._entries:
            if self._closed:
                return None
            self._readable.clear()
            await self._readable.wait()
        return self.get_nowait()

    def get_nowait(self) -> bytes | None:
        """The next frame if one is waiting, else None (for writers that drain in a loop)."""
        if not self._entries:
            return None
        entry = self._entries.popleft()
        if entry.key is _NOTICE:
            assert self._notice is not None
            n, self._unreported, self._marked = self._unreported, 0, False
            return self._notice(n)
        if entry.key is not None and self._keyed.get(entry.key) is entry:
            del self._keyed[entry.key]
        self._size -= len(entry.data)
        if self._size < self.limit:
            self._room.set()
        return entry.data

    def close(self) -> None:
        """Stop taking frames; wake every waiter. Frames already queued can still be
        taken with :meth:`get` until it returns None."""
        self._closed = True
        self._readable.set()
        self._room.set()
