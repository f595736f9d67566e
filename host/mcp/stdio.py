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

from .jsonrpc import INVALID_REQUEST, RpcError, decode_message, error_response
from .server import McpServer
from .session import Session

__all__ = ["StdioTransport", "serve_stdio"]

log = logging.getLogger("mcphost.mcp")

_CHUNK = 1 << 16


class _Writer(asyncio.Protocol):
    def __init__(self) -> None:
        self.closed = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


class StdioTransport:
    """Reads messages from ``reader``, writes answers and notifications to ``write``."""

    def __init__(self, server: McpServer, write: asyncio.WriteTransport) -> None:
        self.server = server
        self._out = write
        self.session = Session(server, push=self.notify)
        self.tasks: set[asyncio.Task[None]] = set()
        self.limit = server.options.max_message_bytes

    # Channel: every notification of this connection goes down the same pipe.
    def notify(self, data: bytes) -> None:
        if not self._out.is_closing():
            self._out.write(data + b"\n")

    async def run(self, reader: asyncio.StreamReader) -> None:
        buf = bytearray()
        discarding = 0
        try:
            while True:
                chunk = await reader.read(_CHUNK)
                if not chunk:
                    break
                start = 0
                while True:
                    nl = chunk.find(b"\n", start)
                    if nl < 0:
                        rest = len(chunk) - start
                        if discarding:
                            discarding += rest
                        elif len(buf) + rest > self.limit:
                            discarding = len(buf) + rest
                            buf.clear()
                        else:
                            buf += chunk[start:]
                        break
                    if discarding:
                        self._oversized(discarding + nl - start)
                        discarding = 0
                    elif buf:
                        buf += chunk[start:nl]
                        self._line(bytes(buf))
                        buf.clear()
                    else:
                        self._line(chunk[start:nl])
                    start = nl + 1
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

    async def _request(self, msg: object) -> None:
        try:
            out = await self.session.handle_request(msg, self)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            return  # cancelled by the client: no answer is due
        if out is not None:
            self.notify(out)

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
    reader = asyncio.StreamReader(limit=_CHUNK)
    in_file = os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0)
    read_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), in_file
    )
    write_transport, _ = await loop.connect_write_pipe(_Writer, out_file)
    server.start()
    transport = StdioTransport(server, write_transport)
    try:
        await transport.run(reader)
    finally:
        read_transport.close()
        with contextlib.suppress(Exception):
            write_transport.close()
