"""MCP over stdio: newline-delimited JSON-RPC on stdin/stdout.

Every request runs as its own task, so calls overlap and ``notifications/cancelled`` can
cancel one. A line that is not JSON, not JSON-RPC or over the size limit is answered
with the matching JSON-RPC error and the server reads on.

Everything toward the client goes through one :class:`~.outbox.Outbox`, drained by one
writer that waits whenever the pipe is full: a client that does not read costs bounded
memory (answers wait, notifications are coalesced or dropped and counted), and the
server stops reading new requests until the client catches up.

End of input means "no more requests": every request already read (the last one may
lack its newline) is answered, within the call timeout, and serving ends. A client
that closes stdout is gone: its calls are cancelled and serving ends at once.
stdin and stdout may be pipes, sockets, terminals or regular files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Hashable

from .jsonrpc import (
    INVALID_REQUEST,
    Message,
    RpcError,
    decode_message,
    error_response,
    rejection,
)
from .notices import dropped_notice
from .outbox import Outbox
from .server import McpServer
from .session import Session
from .stdio_pipes import ByteSink, ByteSource, open_stdio

__all__ = ["StdioTransport", "serve_stdio"]

log = logging.getLogger("mcphost.mcp")

#: Requests read but not yet answered before the server stops reading more.
MAX_PENDING_REQUESTS = 1024
#: Bytes written to stdout in one go, at most.
WRITE_BATCH = 256 * 1024
#: Seconds past the call timeout that answering what was read may take after stdin ends.
EOF_GRACE = 10.0


class StdioTransport:
    """Splits input into messages, runs each request as a task, writes every answer."""

    def __init__(self, server: McpServer, source: ByteSource, sink: ByteSink) -> None:
        self.server = server
        self.source = source
        self.sink = sink
        self.outbox = Outbox(dropped_notice=dropped_notice)
        self.session = Session(server, push=self.notify)
        self.tasks: set[asyncio.Task[None]] = set()
        self.limit = server.options.max_message_bytes
        self._buf = bytearray()
        self._discarding = 0
        self._moved = asyncio.Event()  # set whenever an answer was written or a task ended

    # Notifier: every notification of this connection goes down the same pipe.
    def notify(self, data: bytes, key: Hashable | None = None) -> None:
        self.outbox.notify(data, key)

    async def send(self, data: bytes) -> None:
        await self.outbox.put(data)

    # -- input ---------------------------------------------------------------------
    def split(self, chunk: bytes) -> list[bytes | int]:
        """Complete lines in ``chunk`` (with what came before); a line over the size
        limit, which is not kept, comes back as its size."""
        lines: list[bytes | int] = []
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
                return lines
            if self._discarding:
                lines.append(self._discarding + nl - start)
                self._discarding = 0
            elif buf:
                buf += chunk[start:nl]
                lines.append(bytes(buf))
                buf.clear()
            else:
                lines.append(chunk[start:nl])
            start = nl + 1

    def rest(self) -> list[bytes | int]:
        """At end of input: the last line, which had no newline, if there is one."""
        if self._discarding:
            size, self._discarding = self._discarding, 0
            return [size]
        line = bytes(self._buf)
        self._buf.clear()
        return [line] if line.strip() else []

    async def _read_all(self) -> None:
        """Read and dispatch requests until end of input."""
        while True:
            while (
                self.outbox.size >= self.outbox.limit or len(self.tasks) >= MAX_PENDING_REQUESTS
            ) and not self.outbox.closed:
                # The client is not reading its answers: read no more requests for now.
                self._moved.clear()
                await self._moved.wait()
            chunk = await self.source.read()
            self.session.server.frontend.bytes_in += len(chunk)
            if not chunk:
                for line in self.rest():
                    await self._line(line)
                return
            for line in self.split(chunk):
                await self._line(line)

    async def _line(self, line: bytes | int) -> None:
        if isinstance(line, int) or len(line) > self.limit:
            self.session.server.frontend.reject("too_large")
            err = RpcError(
                INVALID_REQUEST,
                f"message of {line if isinstance(line, int) else len(line)} "
                f"bytes is over this server's limit of {self.limit} bytes; "
                "send smaller messages or raise --max-message-bytes",
            )
            await self.outbox.put(error_response(None, err))
            return
        if not line.strip():
            return
        try:
            msg = decode_message(line)
        except RpcError as err:
            self.session.server.frontend.reject(rejection(err))
            await self.outbox.put(error_response(err.id, err))
            return
        if msg.is_request:
            task = asyncio.get_running_loop().create_task(self._request(msg))
            self.tasks.add(task)
            task.add_done_callback(self._ended)
        elif msg.is_notification:
            self.session.handle_notification(msg)
        else:  # a response: the answer to a tool's question (sampling, elicitation)
            self.session.handle_response(msg)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self._moved.set()

    async def _request(self, msg: Message) -> None:
        try:
            out = await self.session.handle_request(msg, self)
        except asyncio.CancelledError:
            return  # cancelled by the client: no answer is due
        if out is not None:
            await self.outbox.put(out)

    # -- output --------------------------------------------------------------------
    async def _write_all(self) -> None:
        """Send what the outbox holds until it is closed and empty, or stdout is gone."""
        while True:
            data = await self.outbox.get()
            if data is None:
                return
            batch = [data]
            size = len(data)
            while size < WRITE_BATCH and (more := self.outbox.get_nowait()) is not None:
                batch.append(more)
                size += len(more)
            batch.append(b"")
            self.session.server.frontend.bytes_out += size + len(batch) - 1
            try:
                await self.sink.write(b"\n".join(batch))
            except OSError as exc:  # EPIPE, connection reset: the client closed stdout
                log.info("stdout closed by the client (%s); stopping", exc)
                return
            self._moved.set()

    # -- lifecycle -----------------------------------------------------------------
    async def run(self) -> None:
        """Serve until input ends (answer what was read) or stdout closes (cancel)."""
        loop = asyncio.get_running_loop()
        writer = loop.create_task(self._write_all())
        reader = loop.create_task(self._read_all())
        # The host (and with it the plugins' workers) starts now, while the client's
        # handshake goes on: initialize is answered without waiting for it, and the
        # first tools/list or tools/call finds the workers started or starting.
        self.server.start()
        lost = loop.create_task(self.sink.wait_lost())
        try:
            await asyncio.wait({reader, writer, lost}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done() and not (writer.done() or lost.done()):
                reader.result()
                await self._finish(writer, lost)
        finally:
            for t in (reader, writer, lost, *self.tasks):
                t.cancel()
            await asyncio.gather(reader, writer, lost, *self.tasks, return_exceptions=True)
            self.outbox.close()
            self.session.close()

    async def _finish(self, writer: asyncio.Task[None], lost: asyncio.Task[None]) -> None:
        """End of input: answer every request already read, then send what is left."""
        deadline = asyncio.get_running_loop().time() + self.server.call_timeout + EOF_GRACE
        self.session.close()  # ends subscriptions/listen streams: nothing more is coming
        while self.tasks and not (writer.done() or lost.done()):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                log.warning("input ended; %d requests still unanswered, cancelled", len(self.tasks))
                break
            await asyncio.wait(
                {*self.tasks, writer, lost}, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
        self.outbox.close()
        left = max(0.0, deadline - asyncio.get_running_loop().time())
        await asyncio.wait({writer, lost}, timeout=left, return_when=asyncio.FIRST_COMPLETED)


async def serve_stdio(server: McpServer) -> None:
    """Serve MCP on this process's stdin/stdout until input ends or stdout closes.

    The protocol keeps the real stdout to itself; file descriptor 1 is pointed at stderr
    so a stray print anywhere in the process cannot corrupt the stream.
    """
    out_fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    source, sink = await open_stdio(os.dup(sys.stdin.fileno()), out_fd)
    try:
        await StdioTransport(server, source, sink).run()
    finally:
        source.close()
        with contextlib.suppress(Exception):
            await sink.close()
