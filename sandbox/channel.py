"""A framed, bidirectional channel over a socket, for asyncio; used on both sides.

An :class:`asyncio.Protocol` parses frames straight from the transport's buffer and hands
each to a callback, so a busy channel costs one callback per frame and no task switch.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from mcphost.sdk.errors import MCPHostError, ProtocolError

from .protocol import HEADER, Frame, FrameCodec

__all__ = ["Channel", "open_channel"]


class Channel(asyncio.Protocol):
    """Reads frames into ``on_frame``; ``on_close`` gets the reason the channel ended."""

    def __init__(
        self,
        codec: FrameCodec,
        on_frame: Callable[[Frame], None],
        on_close: Callable[[BaseException | None], None],
    ) -> None:
        self.codec = codec
        self._on_frame = on_frame
        self._on_close = on_close
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.frames_in = 0
        self.frames_out = 0

    # -- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        size = HEADER.size
        end = len(buf)
        try:
            while end - pos >= size:
                n = self.codec.body_length(bytes(buf[pos : pos + size]))
                if end - pos - size < n:
                    break
                start = pos + size
                frame = self.codec.decode(bytes(buf[start : start + n]))
                pos = start + n
                self.frames_in += 1
                self._on_frame(frame)
        except MCPHostError as exc:
            self._fail(exc)
            return
        finally:
            if pos:
                del buf[:pos]

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
    def send(self, frame: Frame) -> None:
        """Queue one frame for sending; raises ProtocolError if it is over the limit."""
        if self.closed or self._transport is None:
            raise ProtocolError("the channel is closed")
        self._transport.write(self.codec.encode(frame))
        self.frames_out += 1

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if self._paused and not self.closed:
            if self._drain_waiter is None:
                self._drain_waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._drain_waiter)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- internals -----------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
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
        lambda: Channel(codec, on_frame, on_close), sock=sock
    )
    return proto
