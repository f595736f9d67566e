"""Buffers that keep their memory from one frame of megabytes to the next.

Fresh memory costs a large frame more than its copies: the kernel maps and zeroes every
4 KiB page of a new buffer on its first touch (a page fault each, several times dearer
than copying the page), ``bytearray(n)`` zeroes it once more, and the allocator hands
big blocks back to the kernel as soon as they are freed, so the next frame pays again.
Both ends of a channel therefore keep the buffers their last large frame went through
and use them again for the next one, until no large frame has come for
:data:`RETAIN` seconds (looked at as frames come and go: the host's pings bring one
every second). Frames that fit the channel's usual buffers never touch these.
"""

from __future__ import annotations

import mmap
import socket
import time
from collections.abc import Callable
from typing import Any

__all__ = ["LARGE", "RETAIN", "BodyBuffer", "OutBuffer"]

#: Seconds a large frame's buffer is kept after its last use.
RETAIN = 2.0
#: An outgoing buffer that grew to this many bytes is kept (and its memory reused).
LARGE = 1 << 20


class BodyBuffer:
    """Where the body of a frame too large for a channel's read buffer is read.

    One anonymous memory map, kept for the next large body: a map is zero pages until
    written (no zeroing pass of its own) and goes back to the kernel whole once
    released. The frame decoded from a view of it must copy what it keeps (msgspec
    copies strings and bytes; an ``Items`` frame's raw values are decoded before the
    next read).
    """

    __slots__ = ("_map", "_until")

    def __init__(self) -> None:
        self._map: mmap.mmap | None = None
        self._until = 0.0

    @property
    def held(self) -> bool:
        return self._map is not None

    def view(self, n: int) -> memoryview:
        """A writable view of ``n`` bytes (``n`` > 0), of the kept map when it is
        large enough."""
        m = self._map
        if m is None or len(m) < n:
            self._map = None  # the smaller map goes first
            m = self._map = mmap.mmap(-1, n + (n >> 3))  # an eighth more, to grow into
        self._until = time.monotonic() + RETAIN
        return memoryview(m)[:n]

    def trim(self) -> None:
        """Release the map when no large body used it for :data:`RETAIN` seconds."""
        if self._map is not None and time.monotonic() > self._until:
            self._map = None  # a view still in use keeps it alive until released


#: Bytes of a frame's length prefix (protocol.HEADER), and a placeholder for it.
_HEADER = 4
_NO_LENGTH = bytes(_HEADER)
_resize: Callable[[bytearray, int], int] | None = None
_no_resize = False  # this interpreter has no ctypes (or no C API to reach): keep nothing


def _can_keep() -> bool:
    """Whether :func:`_set_length` works here (ctypes is imported on the first call,
    once a large frame was written)."""
    global _resize, _no_resize
    if _resize is None and not _no_resize:
        try:
            import ctypes

            fn: Any = ctypes.pythonapi.PyByteArray_Resize
            fn.argtypes = [ctypes.py_object, ctypes.c_ssize_t]
            fn.restype = ctypes.c_int
            _resize = fn
        except (ImportError, AttributeError, OSError):
            _no_resize = True
    return _resize is not None


def _set_length(buf: bytearray, n: int) -> None:
    """Set ``buf``'s length to ``n`` (a change of it) without writing its bytes:
    CPython's ``PyByteArray_Resize``, which keeps the memory for any length from half
    of it up. BufferError while anything holds a view of ``buf``; only once
    :func:`_can_keep` said yes."""
    assert _resize is not None
    _resize(buf, n)


class OutBuffer:
    """Frames encoded one after another, to leave together in one write.

    ``data[:used]`` holds them; the rest of ``data``, if any, is part of no frame.
    A frame is encoded at :meth:`start`, straight after the four bytes of its header
    (see :meth:`~mcphost.sandbox.protocol.FrameCodec.encode_out`).

    A buffer that grew to :data:`LARGE` keeps its memory once emptied, for the next
    large frame: msgspec encodes into a bytearray up to its length and then cuts it to
    the frame's end (keeping the memory), so before each frame the length goes back to
    the whole allocation and the frame is written in place, with no growth and no fresh
    pages. It is let go once no large write used it for :data:`RETAIN` seconds, or
    when a transport still holds a view of it.
    """

    __slots__ = ("_until", "data", "kept", "used")

    def __init__(self) -> None:
        self.data = bytearray()
        self.used = 0
        #: Above 0 while the buffer keeps its memory: the length its allocation allows.
        self.kept = 0
        self._until = 0.0

    def __len__(self) -> int:
        return self.used

    def start(self) -> int:
        """Where the body of the next frame goes (its header before it)."""
        if self.kept:
            self._stretch()
        used = self.used
        data = self.data
        if len(data) == used:
            data += _NO_LENGTH  # room for the header: msgspec writes at an offset
        elif len(data) < used + _HEADER:
            data[used:] = _NO_LENGTH
        return used + _HEADER

    def write_to(self, sock: socket.socket) -> None:
        """``sendall`` the frames to a blocking socket (then :meth:`clear`)."""
        data = self.data
        if len(data) == self.used:
            sock.sendall(data)
        else:
            with memoryview(data) as whole, whole[: self.used] as frames:
                sock.sendall(frames)

    def view(self) -> memoryview:
        """A view of the frames, for a write that is done with it when it returns
        (release it: ``with out.view() as v``)."""
        return memoryview(self.data)[: self.used]

    def take(self) -> bytearray:
        """The frames as a bytearray of their own (small ones, for a transport that
        keeps it); the buffer starts afresh."""
        data = self.data
        if self.kept:  # a kept buffer keeps its memory: the frames are copied out
            out = data[: self.used]
            self._emptied()
            return out
        if len(data) != self.used:
            del data[self.used :]
        self.data = bytearray()
        self.used = 0
        return data

    def lend(self) -> memoryview:
        """A view of the frames for a transport that may keep it until they are
        written; the buffer is empty now, and is used again only once nothing holds a
        view of it (or a new one takes its place)."""
        view = memoryview(self.data)[: self.used]
        self._emptied()
        if not self.kept:
            self.data = bytearray()  # the transport's now
        return view

    def clear(self) -> None:
        """Empty, once the frames were written (no view of them is left)."""
        if (self.kept or self.used >= LARGE // 2) and self._emptied() is not None:
            return
        self.data.clear()
        self.used = 0

    def consume(self, n: int) -> None:
        """The first ``n`` bytes were written; the rest moves to the front."""
        if n >= self.used:
            self.clear()
            return
        data = self.data
        rest = data[n : self.used]
        data[: len(rest)] = rest
        self.used = len(rest)

    def _emptied(self) -> bool | None:
        """Set ``used`` to 0; whether the memory is kept (None: a small buffer)."""
        data = self.data
        used, self.used = self.used, 0
        size = data.__alloc__()
        if size < LARGE or not (self.kept or _can_keep()):
            self.kept = 0
            return None
        now = time.monotonic()
        if used >= LARGE // 2:
            self._until = now + RETAIN
        if now > self._until:
            self.data = bytearray()
            self.kept = 0
            return False
        self.kept = size - 1
        return True

    def _stretch(self) -> None:
        data = self.data
        cap = self.kept
        try:
            if len(data) == cap:  # no change of length: no check for views either
                _set_length(data, cap - 1)
            _set_length(data, cap)
        except BufferError:
            # A transport is still writing from it: it keeps it, and this one starts
            # afresh with the frames it holds.
            self.data = bytearray(data[: self.used])
            self.kept = 0
