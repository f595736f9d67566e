"""Byte sources and sinks for stdio: pipes, sockets and terminals on the event loop,
regular files and other devices (``/dev/null``) with plain blocking calls in a thread
(the event loop cannot watch them); a terminal is read by a thread of its own. The same
on asyncio's loop and on uvloop.

A sink's ``write`` returns once the data is handed over and the pipe has room again, so
a writer that awaits it holds at most the pipe's own buffer; it raises
:class:`ConnectionError` (e.g. :class:`BrokenPipeError`) once the reader has gone, and
``wait_lost`` tells of that even when nothing is being written. When stdin and stdout
are one socket (inetd style), one connection serves both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import stat
import threading
from typing import Protocol

from mcphost.sandbox.loops import pipe_file

__all__ = ["ByteSink", "ByteSource", "is_pipe_like", "open_stdio"]

READ_SIZE = 64 * 1024


def is_pipe_like(fd: int) -> bool:
    """Whether the event loop can watch ``fd`` (pipe, socket, terminal); else it is read
    and written like a file. Other character devices (``/dev/null``) cannot be watched:
    asyncio's loop refuses them (EPERM from epoll) and uvloop's aborts the process."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISCHR(mode):
        return os.isatty(fd)
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class ByteSource(Protocol):
    async def read(self) -> bytes:
        """The next chunk of input; b"" at its end."""

    def close(self) -> None: ...


class ByteSink(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def wait_lost(self) -> None:
        """Return once the reader has gone (never, for a regular file)."""

    async def close(self) -> None: ...


class _FileSource:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    async def read(self) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(None, os.read, self.fd, READ_SIZE)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class _TerminalSource:
    """A terminal read by a daemon thread of its own: uvloop's read pipe gets nothing
    from a terminal, and a thread of the loop's executor blocked in a read would hold
    up the loop's close until a key is pressed."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.loop = asyncio.get_running_loop()
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue()
        threading.Thread(target=self._read_all, name="mcphost-stdin", daemon=True).start()

    def _read_all(self) -> None:
        while True:
            try:
                data = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                # The same terminal as stdout, made non-blocking by the output's
                # transport (the flag is the open file's, shared by every dup): wait.
                select.select([self.fd], [], [])
                continue
            except OSError:
                data = b""
            try:
                self.loop.call_soon_threadsafe(self.chunks.put_nowait, data)
            except RuntimeError:  # the loop has closed
                return
            if not data:
                return

    async def read(self) -> bytes:
        return await self.chunks.get()

    def close(self) -> None:
        pass  # the thread may be blocked in a read of the fd: it stays open


class _StreamSource:
    def __init__(self, reader: asyncio.StreamReader, transport: asyncio.BaseTransport) -> None:
        self.reader = reader
        self.transport = transport

    async def read(self) -> bytes:
        try:
            return await self.reader.read(READ_SIZE)
        except OSError:  # e.g. a reset socket: no more input either way
            return b""

    def close(self) -> None:
        self.transport.close()


class _FileSink:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    async def write(self, data: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(None, _write_fully, self.fd, data)

    async def wait_lost(self) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        os.close(self.fd)


def _write_fully(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:  # made non-blocking by another user of the open file
            select.select([], [fd], [])


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


class _PipeSink:
    def __init__(self, transport: asyncio.WriteTransport, flow: _Flow) -> None:
        self.transport = transport
        self.flow = flow

    async def write(self, data: bytes) -> None:
        if not self.flow.lost.is_set():
            self.transport.write(data)
            await self.flow.room.wait()
        if self.flow.lost.is_set():
            raise BrokenPipeError("the reader of stdout has gone")

    async def wait_lost(self) -> None:
        await self.flow.lost.wait()

    async def close(self) -> None:
        self.transport.close()  # sends what it buffered first, then closes the fd


class _StreamSink:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def wait_lost(self) -> None:
        await self.writer.wait_closed()

    async def close(self) -> None:
        self.writer.close()


async def open_stdio(in_fd: int, out_fd: int) -> tuple[ByteSource, ByteSink]:
    """A source reading ``in_fd`` and a sink writing ``out_fd``; both fds are theirs."""
    loop = asyncio.get_running_loop()
    a, b = os.fstat(in_fd), os.fstat(out_fd)
    if stat.S_ISSOCK(a.st_mode) and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
        # One socket both ways: a write-only transport would take the client's requests
        # for the end of the connection, so one duplex connection serves both.
        os.close(out_fd)
        reader, writer = await asyncio.open_connection(
            sock=socket.socket(fileno=in_fd), limit=READ_SIZE
        )
        return _StreamSource(reader, writer.transport), _StreamSink(writer)
    source: ByteSource
    if os.isatty(in_fd):
        source = _TerminalSource(in_fd)
    elif is_pipe_like(in_fd):
        reader = asyncio.StreamReader(limit=READ_SIZE, loop=loop)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop),
            pipe_file(in_fd, "rb"),
        )
        source = _StreamSource(reader, transport)
    else:
        source = _FileSource(in_fd)
    try:
        if not is_pipe_like(out_fd) or os.isatty(out_fd):
            # A terminal is written by a thread too: libuv would make the terminal's
            # open file non-blocking for stdin's reader as well, and read from it.
            return source, _FileSink(out_fd)
        flow = _Flow()
        out, _ = await loop.connect_write_pipe(lambda: flow, pipe_file(out_fd, "wb"))
        return source, _PipeSink(out, flow)
    except BaseException:
        source.close()
        raise
