"""MCP over stdio: newline-delimited JSON-RPC on stdin/stdout.

Every request runs as its own task, so calls overlap and ``notifications/cancelled`` can
cancel one. A line that is not JSON, not JSON-RPC or over the size limit is answered
with the matching JSON-RPC error and the server reads on. When stdin closes (the client
went away), every call in flight is cancelled in its worker and serving ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys

from .jsonrpc import INVALID_REQUEST, Message, RpcError, decode_message, error_response
from .server import McpServer
from .session import Session

__all__ = ["StdioTransport", "serve_stdio"]

log = logging.getLogger("mcphost.mcp")


class _Reader(asyncio.Protocol):
    def __init__(self, transport: StdioTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.feed(data)

    def eof_received(self) -> bool:
        self.transport.eof.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport.eof.set()


class _Writer(asyncio.Protocol):
    def __init__(self) -> None:
        self.closed = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


class StdioTransport:
    """Splits stdin into messages, runs each request as a task, writes every answer."""

    def __init__(self, server: McpServer, write: asyncio.WriteTransport) -> None:
        self.server = server
        self._out = write
        self.session = Session(server, push=self.notify)
        self.tasks: set[asyncio.Task[None]] = set()
        self.limit = server.options.max_message_bytes
        self.eof = asyncio.Event()
        self._buf = bytearray()
        self._discarding = 0

    # Channel: every notification of this connection goes down the same pipe.
    def notify(self, data: bytes) -> None:
        if not self._out.is_closing():
            self._out.write(data + b"\n")

    def feed(self, chunk: bytes) -> None:
        """Split incoming bytes into lines; each complete line is one message."""
        start = 0
        buf = self._buf
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                rest = len(chunk) - start
                if self._discarding:
                    self._discarding += rest
                elif len(buf) + rest > self.limit:
                    self._discarding = len(buf) + rest
                    buf.clear()
                else:
                    buf += chunk[start:]
                return
            if self._discarding:
                self._oversized(self._discarding + nl - start)
                self._discarding = 0
            elif buf:
                buf += chunk[start:nl]
                line = bytes(buf)
                buf.clear()
                self._line(line)
            else:
                self._line(chunk[start:nl])
            start = nl + 1

    async def run(self) -> None:
        """Serve until stdin closes, then cancel what still runs."""
        try:
            await self.eof.wait()
        finally:
            await self.shutdown()

    def _oversized(self, size: int) -> None:
        err = RpcError(
            INVALID_REQUEST,
            f"message of {size} bytes is over this server's limit of {self.limit} bytes; "
            "send smaller messages or raise --max-message-bytes",
        )
        self.notify(error_response(None, err))

    def _line(self, line: bytes) -> None:
        if len(line) > self.limit:
            self._oversized(len(line))
            return
        if not line.strip():
            return
        try:
            msg = decode_message(line)
        except RpcError as err:
            self.notify(error_response(err.id, err))
            return
        if msg.is_request:
            task = asyncio.get_running_loop().create_task(self._request(msg))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif msg.is_notification:
            self.session.handle_notification(msg)
        # A response from the client answers nothing: this server sends no requests.

    async def _request(self, msg: Message) -> None:
        try:
            out = await self.session.handle_request(msg, self)
        except asyncio.CancelledError:
            return  # cancelled by the client: no answer is due
        if out is not None:
            self.notify(out)
        # The host starts once the first answer is out: initialize is never kept waiting
        # by plugin discovery; tools/list and tools/call wait for the host instead.
        self.server.start()

    async def shutdown(self) -> None:
        """Cancel what is still running (the client is gone) and close the session."""
        for t in list(self.tasks):
            t.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.session.close()


async def serve_stdio(server: McpServer) -> None:
    """Serve MCP on this process's stdin/stdout until stdin closes.

    The protocol keeps the real stdout to itself; file descriptor 1 is pointed at stderr
    so a stray print anywhere in the process cannot corrupt the stream.
    """
    loop = asyncio.get_running_loop()
    out_fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    out_file = os.fdopen(out_fd, "wb", buffering=0)
    in_file = os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0)
    write_transport, _ = await loop.connect_write_pipe(_Writer, out_file)
    transport = StdioTransport(server, write_transport)
    read_transport, _ = await loop.connect_read_pipe(lambda: _Reader(transport), in_file)
    try:
        await transport.run()
    finally:
        read_transport.close()
        with contextlib.suppress(Exception):
            write_transport.close()
