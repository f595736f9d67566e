"""Byte sources and sinks for stdio: pipes, sockets and terminals on the event loop,
regular files with plain blocking calls in a thread (the event loop cannot watch files).

A sink's :meth:`ByteSink.write` returns once the data is handed over and the pipe has
room again, so a writer that awaits it holds at most the pipe's own buffer; it raises
:class:`BrokenPipeError` once the reader has gone, and :meth:`ByteSink.wait_lost` tells
of that even when nothing is being written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat

__all__ = ["ByteSink", "ByteSource", "is_pipe_like", "open_sink", "open_source"]

READ_SIZE = 64 * 1024


def is_pipe_like(fd: int) -> bool:
    """Whether the event loop can watch ``fd`` (pipe, socket, terminal); else a file."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


class ByteSource:
    """Reads chunks from a file descriptor; b"" at end of input."""

    def __init__(self, fd: int, reader: asyncio.StreamReader | None) -> None:
        self.fd = fd
        self._reader = reader
        self._transport: asyncio.ReadTransport | None = None

    async def read(self) -> bytes:
        if self._reader is None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, os.read, self.fd, READ_SIZE)
        try:
            return await self._reader.read(READ_SIZE)
        except OSError:  # e.g. a reset socket: no more input either way
            return b""

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()  # closes the fd too
        else:
            with contextlib.suppress(OSError):
                os.close(self.fd)


async def open_source(fd: int) -> ByteSource:
    """A source reading ``fd`` (which it owns from now on)."""
    if not is_pipe_like(fd):
        return ByteSource(fd, None)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=READ_SIZE, loop=loop)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop),
        os.fdopen(fd, "rb", buffering=0),
    )
    source = ByteSource(fd, reader)
    source._transport = transport
    return source


class _Flow(asyncio.Protocol):
    """Follows a write transport: paused while its buffer is full, lost once closed."""

    def __init__(self) -> None:
        self.room = asyncio.Event()
        self.room.set()
        self.lost = asyncio.Event()

    def pause_writing(self) -> None:
        self.room.clear()

    def resume_writing(self) -> None:
        self.room.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        self.room.set()


class ByteSink:
    """Writes to a file descriptor; see the module doc."""

    def __init__(self, fd: int, transport: asyncio.WriteTransport | None, flow: _Flow) -> None:
        self.fd = fd
        self._transport = transport
        self._flow = flow

    async def write(self, data: bytes) -> None:
        if self._flow.lost.is_set():
            raise BrokenPipeError("the reader of stdout has gone")
        if self._transport is None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, _write_fully, self.fd, data)
            return
        self._transport.write(data)
        await self._flow.room.wait()
        if self._flow.lost.is_set():
            raise BrokenPipeError("the reader of stdout has gone")

    async def wait_lost(self) -> None:
        """Return once the reader has gone (never, for a regular file)."""
        await self._flow.lost.wait()

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()  # sends what it buffered first, then closes the fd
        else:
            os.close(self.fd)


def _write_fully(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def open_sink(fd: int) -> ByteSink:
    """A sink writing to ``fd`` (which it owns from now on)."""
    flow = _Flow()
    if not is_pipe_like(fd):
        return ByteSink(fd, None, flow)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_write_pipe(lambda: flow, os.fdopen(fd, "wb", buffering=0))
    return ByteSink(fd, transport, flow)
