"""A framed, bidirectional channel over a socket, for asyncio; used on both sides.

Reading: the transport reads straight into the channel's own buffer (an
:class:`asyncio.BufferedProtocol`, so no bytes object is allocated per read), and every
whole frame in it is decoded and handed to ``on_frame`` in one pass: a busy channel
costs one callback per frame and no task switch.

Writing: frames are encoded into one outgoing buffer. Frames sent while a read is being
handled leave together, in one write, when it is done; ``send(frame, flush=False)`` lets
a frame wait for the next turn of the loop, so frames sent in one turn (many concurrent
calls) leave in one write too. ``send_threadsafe`` is for other threads (a worker's
thread pool sending its results): it writes at once when the socket takes the bytes and
nothing is queued before them, and otherwise leaves them to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable

from mcphost.sdk.errors import MCPHostError, ProtocolError

from .protocol import HEADER, Frame, FrameCodec

__all__ = ["Channel", "open_channel"]

#: Size of the read buffer; it grows for a larger frame and shrinks back once it is read.
READ_SIZE = 256 * 1024
#: A read is never offered less room than this (the partial frame moves to the front).
MIN_READ = 16 * 1024
#: Frames held back to leave together are written once this many have gathered: the
#: peer can start on them while this side goes on with the rest.
WRITE_BATCH = 32


class Channel(asyncio.BufferedProtocol):
    """Reads frames into ``on_frame``; ``on_close`` gets the reason the channel ended."""

    def __init__(
        self,
        codec: FrameCodec,
        on_frame: Callable[[Frame], None],
        on_close: Callable[[BaseException | None], None],
        sock: socket.socket | None = None,
    ) -> None:
        self.codec = codec
        self._on_frame = on_frame
        self._on_close = on_close
        self._sock = sock
        self._buf = bytearray(READ_SIZE)
        self._view = memoryview(self._buf)
        self._start = 0  # the first byte not yet decoded
        self._end = 0  # the end of the bytes read
        self._out = bytearray()  # frames encoded and not yet handed to the transport
        self._queued = 0  # how many frames _out holds
        self._lock = threading.Lock()  # guards _out and the order of writes
        self._receiving = False  # a read is being handled: its end writes _out
        self._scheduled = False  # a write of _out is scheduled on the loop
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.frames_in = 0
        self.frames_out = 0

    # -- asyncio.BufferedProtocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._loop = asyncio.get_running_loop()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        end = self._end = self._end + nbytes
        buf = self._buf
        view = self._view
        pos = self._start
        size = HEADER.size
        body_length = self.codec.body_length
        decode = self.codec.decode
        on_frame = self._on_frame
        need = size
        self._receiving = True
        try:
            while end - pos >= size:
                need = size + body_length(buf, pos)
                if end - pos < need:
                    break
                frame = decode(view[pos + size : pos + need])
                pos += need
                need = size
                self.frames_in += 1
                on_frame(frame)
        except MCPHostError as exc:
            self._start = pos
            self._end_receiving()
            self._fail(exc)
            return
        except BaseException:
            self._start = pos
            self._end_receiving()
            raise
        self._end_receiving()
        if pos == end:
            self._start = self._end = 0
            if len(buf) > READ_SIZE:
                self._resize(READ_SIZE, 0, 0)
        elif len(buf) - pos < max(need, MIN_READ):
            self._resize(max(need, READ_SIZE), pos, end)
        else:
            self._start = pos

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        w, self._drain_waiter = self._drain_waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    # -- sending -------------------------------------------------------------------
    def send(self, frame: Frame, *, flush: bool = True) -> None:
        """Queue one frame for sending; raises ProtocolError if it is over the limit.

        From the loop's thread only. It is written at once, or with the other frames
        of the read being handled; ``flush=False`` lets it wait for the next turn of the
        loop, to leave together with the frames sent until then.
        """
        with self._lock:
            if self.closed or self._transport is None:
                raise ProtocolError("the channel is closed")
            self.codec.encode_into(frame, self._out)
            self.frames_out += 1
            self._queued += 1
            if (flush and not self._receiving) or self._queued >= WRITE_BATCH:
                self._write_out()
            elif not self._receiving and not self._scheduled:
                self._scheduled = True
                assert self._loop is not None
                self._loop.call_soon(self._write_scheduled)

    def send_threadsafe(self, frame: Frame) -> None:
        """Like :meth:`send`, from any thread."""
        with self._lock:
            if self.closed or self._transport is None:
                raise ProtocolError("the channel is closed")
            out = self._out
            self.codec.encode_into(frame, out)
            self.frames_out += 1
            self._queued += 1
            if self._receiving or self._scheduled:
                return  # the loop writes _out soon, this frame with it
            # Nothing is queued before this frame: when the transport holds nothing
            # either, the socket may take it now, without waking the loop.
            tr = self._transport
            if self._sock is not None and not tr.is_closing() and not tr.get_write_buffer_size():
                try:
                    n = self._sock.send(out)
                except OSError:  # full, or broken: the loop's write finds out which
                    n = 0
                if n == len(out):
                    out.clear()
                    self._queued = 0
                    return
                del out[:n]
            self._scheduled = True
            assert self._loop is not None
            # A closed loop sends nothing any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._write_scheduled)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if self._paused and not self.closed:
            if self._drain_waiter is None:
                self._drain_waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._drain_waiter)

    def close(self) -> None:
        """Write what is queued, then close (the transport sends its buffer first)."""
        if self._transport is not None:
            with self._lock:
                if not self.closed:
                    self._write_out()
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- internals -----------------------------------------------------------------
    def _write_out(self) -> None:
        """Hand the queued frames to the transport; the caller holds the lock."""
        if self._out and self._transport is not None and not self.closed:
            data, self._out = self._out, bytearray()
            self._queued = 0
            self._transport.write(data)

    def _write_scheduled(self) -> None:
        with self._lock:
            self._scheduled = False
            self._write_out()

    def _end_receiving(self) -> None:
        with self._lock:
            self._receiving = False
            self._write_out()

    def _resize(self, size: int, start: int, end: int) -> None:
        """A new read buffer of ``size`` bytes holding the unread bytes at its front."""
        new = bytearray(size)
        new[: end - start] = self._view[start:end]
        self._buf, self._view = new, memoryview(new)
        self._start, self._end = 0, end - start

    def _fail(self, exc: BaseException) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        with self._lock:
            if self.closed:
                return
            # Under the lock: no other thread is writing to the socket past this point.
            self.closed = True
            self._out = bytearray()
        w, self._drain_waiter = self._drain_waiter, None
        if w is not None and not w.done():
            w.set_result(None)
        self._on_close(exc)


async def open_channel(
    sock: socket.socket,
    codec: FrameCodec,
    on_frame: Callable[[Frame], None],
    on_close: Callable[[BaseException | None], None],
) -> Channel:
    """Wrap a connected stream socket (e.g. one end of a socketpair) in a Channel."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_unix_connection(
        lambda: Channel(codec, on_frame, on_close, sock), sock=sock
    )
    return proto
