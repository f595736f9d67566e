"""A framed, bidirectional channel over a socket, for asyncio; used on both sides.

Reading: the transport reads straight into the channel's own buffer (an
:class:`asyncio.BufferedProtocol`, so no bytes object is allocated per read), and every
whole frame in it is decoded and handed to ``on_frame`` in one pass: a busy channel
costs one callback per frame and no task switch. A frame larger than that buffer is read
into a buffer of its own, of its size (the header tells it), and decoded from there:
its bytes are copied by no one on the way in, and that buffer is kept for the next
large frame (:class:`~.buffers.BodyBuffer`: no fresh pages per frame).

Writing: frames are encoded into one outgoing buffer. Frames sent while a read is being
handled leave together, in one write, when it is done; ``send(frame, flush=False)`` lets
a frame wait for the next turn of the loop, so frames sent in one turn (many concurrent
calls) leave in one write too. ``send_threadsafe`` is for other threads (a worker's
thread pool sending its results): it writes at once when the socket takes the bytes and
nothing is queued before them, and otherwise leaves them to the loop. A large frame is
handed to the transport as a view of the bytes it was encoded into, which neither loop
copies again for the part the socket took at once (uvloop copies none of it); once the
transport is done with it, that buffer takes the next large frame
(:class:`~.buffers.OutBuffer`).

Works on asyncio's own loop and on uvloop (whose transports are not
:class:`asyncio.Transport` instances, but have the same methods).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from typing import cast

from mcphost.sdk.errors import MCPHostError, ProtocolError

from .buffers import BodyBuffer, OutBuffer
from .protocol import HEADER, Frame, FrameCodec

__all__ = ["Channel", "open_channel"]

#: Size of the read buffer; a frame larger than this is read into a buffer of its own.
READ_SIZE = 256 * 1024
#: A read is never offered less room than this (the partial frame moves to the front).
MIN_READ = 16 * 1024
#: Frames held back to leave together are written once this many have gathered: the
#: peer can start on them while this side goes on with the rest.
WRITE_BATCH = 32
#: Queued bytes from this size on are handed to the transport at once, as a view.
LARGE_WRITE = 64 * 1024


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
        self._big: memoryview | None = None  # the body of a large frame being read
        self._big_fill = 0  # how much of it is read
        self._large = BodyBuffer()  # where large bodies are read, kept between them
        self._out = OutBuffer()  # frames encoded and not yet handed to the transport
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
        #: Body length of the frame being handed to ``on_frame`` (a stream item's size).
        self.last_size = 0

    # -- asyncio.BufferedProtocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's socket transport or uvloop's: the same methods, not the same class.
        self._transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._big is not None:
            return self._big[self._big_fill :]
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._big is not None:
            self._big_read(nbytes)
            return
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
                    if need > READ_SIZE:
                        self._start = pos
                        self._end_receiving()
                        self._begin_big(need - size, pos + size, end)
                        return
                    break
                frame = decode(view[pos + size : pos + need])
                self.last_size = need - size
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
        if self._large.held:
            self._large.trim()
        if pos == end:
            self._start = self._end = 0
        elif len(buf) - pos < max(need, MIN_READ):
            # The partial frame (shorter than the buffer) moves to the front.
            rest = end - pos
            buf[:rest] = view[pos:end].tobytes()
            self._start, self._end = 0, rest
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
            self.codec.encode_out(frame, self._out)
            self.frames_out += 1
            self._queued += 1
            if (
                (flush and not self._receiving)
                or self._queued >= WRITE_BATCH
                or len(self._out) >= LARGE_WRITE
            ):
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
            self.codec.encode_out(frame, out)
            self.frames_out += 1
            self._queued += 1
            if self._receiving or self._scheduled:
                return  # the loop writes _out soon, this frame with it
            # Nothing is queued before this frame: when the transport holds nothing
            # either, the socket may take it now, without waking the loop.
            tr = self._transport
            if self._sock is not None and not tr.is_closing() and not tr.get_write_buffer_size():
                try:
                    with out.view() as view:
                        n = self._sock.send(view)
                except OSError:  # full, or broken: the loop's write finds out which
                    n = 0
                if n == len(out):
                    out.clear()
                    self._queued = 0
                    return
                out.consume(n)
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
        out = self._out
        if out.used and self._transport is not None and not self.closed:
            self._queued = 0
            if out.used < LARGE_WRITE:
                self._transport.write(out.take())
            else:
                # A view: asyncio's loop then copies only what the socket did not take
                # at once (it would slice a bytearray first), uvloop nothing at all.
                # Nothing writes into those bytes while the transport holds the view.
                self._transport.write(out.lend())

    def _write_scheduled(self) -> None:
        with self._lock:
            self._scheduled = False
            self._write_out()

    def _end_receiving(self) -> None:
        with self._lock:
            self._receiving = False
            self._write_out()

    def _begin_big(self, length: int, start: int, end: int) -> None:
        """Go on reading a frame body of ``length`` bytes, whose first bytes are
        ``buf[start:end]``, into a buffer of its own (reads stop at its end)."""
        big = self._large.view(length)
        have = end - start
        big[:have] = self._view[start:end]
        self._big, self._big_fill = big, have
        self._start = self._end = 0

    def _big_read(self, nbytes: int) -> None:
        big = self._big
        assert big is not None
        self._big_fill += nbytes
        if self._big_fill < len(big):
            return
        self._big = None
        self._receiving = True
        try:
            frame = self.codec.decode(big)
            self.last_size = len(big)
            del big  # the frame holds copies: the buffer is free for the next one
            self.frames_in += 1
            self._on_frame(frame)
        except MCPHostError as exc:
            self._end_receiving()
            self._fail(exc)
            return
        except BaseException:
            self._end_receiving()
            raise
        self._end_receiving()

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
            self._out = OutBuffer()
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
    """Wrap a connected stream socket (one end of a socketpair, or a TCP connection to
    a node that relays a worker's channel) in a Channel."""
    loop = asyncio.get_running_loop()
    if sock.family == socket.AF_UNIX:
        _, proto = await loop.create_unix_connection(
            lambda: Channel(codec, on_frame, on_close, sock), sock=sock
        )
    else:
        _, proto = await loop.create_connection(
            lambda: Channel(codec, on_frame, on_close, sock), sock=sock
        )
    return proto
