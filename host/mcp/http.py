"""MCP over streamable HTTP: one endpoint, POST / GET / DELETE, JSON or SSE answers.

HTTP/1.1 parsing is h11's (sans-IO) over asyncio streams. Both eras share the endpoint:

* handshake era: ``initialize`` creates a session and answers with ``Mcp-Session-Id``;
  later requests name it; ``GET`` opens the session's stream for list_changed and log
  notifications; ``DELETE`` ends the session.
* 2026-07-28: every POST stands alone (``_meta`` envelope, ``MCP-Protocol-Version``
  header equal to it); closing the response stream cancels the call; ``GET`` is 405.

An answer starts as JSON and turns into an SSE stream the moment a notification for it
(progress, log) has to go out first. By default the server binds loopback only, checks
``Host`` (DNS rebinding) and refuses browser ``Origin`` s other than localhost's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

import h11
import msgspec

from .jsonrpc import (
    HEADER_MISMATCH,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    UNSUPPORTED_PROTOCOL_VERSION,
    Message,
    RpcError,
    decode_message,
    error_response,
)
from .server import HANDSHAKE_VERSIONS, McpServer
from .session import PROTOCOL_VERSION_KEY, Session, has_envelope

__all__ = ["HttpFrontEnd", "HttpOptions", "serve_http"]

log = logging.getLogger("mcphost.mcp.http")

_ERROR_STATUS = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    UNSUPPORTED_PROTOCOL_VERSION: 400,
    METHOD_NOT_FOUND: 404,
}
_Headers = Sequence[tuple[bytes, bytes]]
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


class _Reply(msgspec.Struct):
    error: dict[str, Any] | None = None


_reply_decoder = msgspec.json.Decoder(_Reply)


class HttpOptions:
    """Where and how to serve HTTP."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        path: str = "/mcp",
        allowed_origins: Iterable[str] = (),
        allow_remote: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.path = path if path.startswith("/") else "/" + path
        self.allowed_origins = set(allowed_origins)
        self.allow_remote = allow_remote


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(value: str) -> str:
    """The host part of a Host header or an origin's authority."""
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class _Exchange:
    """The answer to one POST: JSON unless a notification forces an SSE stream first."""

    def __init__(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, headers: _Headers
    ) -> None:
        self.conn = conn
        self.writer = writer
        self.headers = headers
        self.sse = False
        self.closed = False

    def _write(self, event: Any) -> None:
        if self.closed or self.writer.is_closing():
            self.closed = True
            return
        try:
            data = self.conn.send(event)
        except h11.LocalProtocolError:  # the answer is already complete
            self.closed = True
            return
        if data:
            self.writer.write(data)

    def start_sse(self) -> None:
        if not self.sse:
            self.sse = True
            self._write(
                h11.Response(
                    status_code=200,
                    headers=[
                        (b"content-type", b"text/event-stream"),
                        (b"cache-control", b"no-cache"),
                        *self.headers,
                    ],
                )
            )

    def notify(self, data: bytes) -> None:
        if self.closed:
            return
        self.start_sse()
        self._write(h11.Data(data=b"event: message\ndata: " + data + b"\n\n"))

    def finish(self, data: bytes | None, status: int = 200) -> None:
        if self.sse:
            if data is not None:
                self.notify(data)
            self._write(h11.EndOfMessage())
        elif data is None:
            self._write(
                h11.Response(status_code=202, headers=[(b"content-length", b"0"), *self.headers])
            )
            self._write(h11.EndOfMessage())
        else:
            self._write(
                h11.Response(
                    status_code=status,
                    headers=[
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(data)).encode()),
                        *self.headers,
                    ],
                )
            )
            self._write(h11.Data(data=data))
            self._write(h11.EndOfMessage())


class _Stream:
    """A session's GET stream: session-wide notifications as SSE events."""

    def __init__(self, exchange: _Exchange) -> None:
        self.exchange = exchange
        self.ended = asyncio.Event()

    def push(self, data: bytes) -> None:
        self.exchange.notify(data)
        if self.exchange.closed:
            self.ended.set()


class HttpFrontEnd:
    """The HTTP server: accepts connections, keeps handshake-era sessions by id."""

    def __init__(self, server: McpServer, options: HttpOptions | None = None) -> None:
        self.server = server
        self.options = options or HttpOptions()
        if not self.options.allow_remote and not _is_loopback(self.options.host):
            raise ValueError(
                f"refusing to serve MCP on {self.options.host}: it is not a loopback address "
                "and the endpoint has no authentication; pass --allow-remote to do it anyway"
            )
        self.sessions: dict[str, Session] = {}
        self.streams: dict[str, _Stream] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self.port = self.options.port

    async def start(self) -> int:
        """Bind and start accepting; returns the port (useful with port 0)."""
        self.server.start()
        self._server = await asyncio.start_server(
            self._accept, self.options.host, self.options.port, limit=1 << 16
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def url(self) -> str:
        host = self.options.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}{self.options.path}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for s in list(self.sessions.values()):
            s.close()
        for st in self.streams.values():
            st.ended.set()
        for t in list(self._connections):
            t.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    # -- connections -----------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        limit = self.server.options.max_message_bytes
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        while True:
            try:
                event = await self._next(conn, reader)
                if not isinstance(event, h11.Request):
                    return
                body = bytearray()
                length = _header(event.headers, b"content-length")
                if length is not None and length.isdigit() and int(length) > limit:
                    self._simple(
                        conn,
                        writer,
                        413,
                        f"request body of {length} bytes is over the limit of {limit} bytes",
                    )
                    return
                while True:
                    ev = await self._next(conn, reader)
                    if isinstance(ev, h11.Data):
                        body += ev.data
                        if len(body) > limit:
                            self._simple(
                                conn,
                                writer,
                                413,
                                f"request body is over the limit of {limit} bytes",
                            )
                            return
                    elif isinstance(ev, h11.EndOfMessage):
                        break
                    else:
                        return
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    self._simple(conn, writer, 400, f"malformed HTTP request: {exc}")
                return
            keep = await self._handle(conn, reader, writer, event, bytes(body))
            await writer.drain()
            if not keep or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _next(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await reader.read(1 << 16)
            conn.receive_data(data)

    def _simple(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        text: str,
        headers: _Headers | None = None,
    ) -> None:
        body = (text + "\n").encode()
        try:
            writer.write(
                conn.send(
                    h11.Response(
                        status_code=status,
                        headers=[
                            (b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            *(headers or []),
                        ],
                    )
                )
                or b""
            )
            writer.write(conn.send(h11.Data(data=body)) or b"")
            writer.write(conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            pass

    def _json_error(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        err: RpcError,
        rid: Any = None,
    ) -> None:
        _Exchange(conn, writer, []).finish(error_response(rid, err), status)

    # -- requests --------------------------------------------------------------------
    def _check_origin(self, headers: _Headers) -> tuple[int, str] | None:
        host = _header(headers, b"host")
        if (
            not self.options.allow_remote
            and _is_loopback(self.options.host)
            and (host is None or _host_name(host) not in _LOOPBACK_NAMES)
        ):
            return 421, f"Host {host!r} is not this loopback server (DNS rebinding protection)"
        origin = _header(headers, b"origin")
        if origin is None or origin in self.options.allowed_origins:
            return None
        scheme, _, authority = origin.partition("://")
        if scheme in ("http", "https") and _host_name(authority) in _LOOPBACK_NAMES:
            return None
        return 403, (f"Origin {origin!r} may not call this server; allow it with --allow-origin")

    async def _handle(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        req: h11.Request,
        body: bytes,
    ) -> bool:
        path = req.target.split(b"?", 1)[0].decode("latin-1")
        if path != self.options.path:
            self._simple(conn, writer, 404, f"not found: the MCP endpoint is {self.options.path}")
            return True
        refused = self._check_origin(req.headers)
        if refused is not None:
            self._simple(conn, writer, *refused)
            return True
        method = req.method
        if method == b"POST":
            return await self._post(conn, reader, writer, req.headers, body)
        if method == b"GET":
            return await self._get(conn, reader, writer, req.headers)
        if method == b"DELETE":
            sid = _header(req.headers, b"mcp-session-id")
            session = self.sessions.pop(sid, None) if sid else None
            if session is None:
                self._simple(conn, writer, 404 if sid else 400, "no such session")
                return True
            session.close()
            stream = self.streams.pop(sid or "", None)
            if stream is not None:
                stream.ended.set()
            self._simple(conn, writer, 200, "session ended")
            return True
        self._simple(
            conn, writer, 405, "use POST, GET or DELETE", [(b"allow", b"GET, POST, DELETE")]
        )
        return True

    async def _post(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        headers: _Headers,
        body: bytes,
    ) -> bool:
        ctype = (_header(headers, b"content-type") or "").lower()
        if not ctype.startswith("application/json"):
            self._simple(conn, writer, 415, "POST a JSON-RPC message as application/json")
            return True
        accept = (_header(headers, b"accept") or "*/*").lower()
        if not any(a in accept for a in ("application/json", "text/event-stream", "*/*")):
            self._simple(conn, writer, 406, "accept application/json and text/event-stream")
            return True
        try:
            msg = decode_message(body)
        except RpcError as err:
            self._json_error(conn, writer, 400, err, err.id)
            return True
        sid = _header(headers, b"mcp-session-id")
        version_header = _header(headers, b"mcp-protocol-version")
        if not msg.is_request:
            session = self.sessions.get(sid) if sid else None
            if session is not None and msg.is_notification:
                session.handle_notification(msg)
            _Exchange(conn, writer, []).finish(None)
            return True
        params = msg.params if isinstance(msg.params, dict) else None
        if msg.method == "initialize":
            session = Session(self.server, era="legacy")
            sid = secrets.token_urlsafe(24)
            out = await self._run(
                conn,
                reader,
                writer,
                session,
                msg,
                [(b"mcp-session-id", sid.encode())],
                modern=False,
            )
            if session.version is not None:
                self.sessions[sid] = session
            else:
                session.close()
            return out
        if sid is None and has_envelope(params):
            assert params is not None
            version = params["_meta"][PROTOCOL_VERSION_KEY]
            if version_header != version:
                self._json_error(
                    conn,
                    writer,
                    400,
                    RpcError(
                        HEADER_MISMATCH,
                        "the MCP-Protocol-Version header must equal the "
                        "protocol version in the request's _meta",
                    ),
                    msg.id,
                )
                return True
            session = Session(self.server, era="modern")
            try:
                return await self._run(conn, reader, writer, session, msg, [], modern=True)
            finally:
                session.close()
        if sid is None:
            self._json_error(
                conn,
                writer,
                400,
                RpcError(
                    INVALID_REQUEST,
                    "missing Mcp-Session-Id header: send initialize first, or "
                    "use the 2026-07-28 per-request _meta envelope",
                ),
                msg.id,
            )
            return True
        found = self.sessions.get(sid)
        if found is None:
            self._simple(
                conn,
                writer,
                404,
                "no such session; it ended or the server restarted: initialize again",
            )
            return True
        if version_header is not None and version_header not in HANDSHAKE_VERSIONS:
            self._json_error(
                conn,
                writer,
                400,
                RpcError(INVALID_REQUEST, f"unsupported MCP-Protocol-Version {version_header!r}"),
                msg.id,
            )
            return True
        return await self._run(conn, reader, writer, found, msg, [], modern=False)

    async def _run(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: Session,
        msg: Message,
        headers: _Headers,
        *,
        modern: bool,
    ) -> bool:
        """Answer one request while watching the connection: a client that goes away
        cancels a 2026-07-28 call (closing the stream is its cancellation)."""
        exchange = _Exchange(conn, writer, headers)
        handler = asyncio.ensure_future(session.handle_request(msg, exchange))
        watcher = asyncio.ensure_future(reader.read(1 << 16))
        try:
            await asyncio.wait({handler, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not handler.done():
                data = watcher.result()
                if not data:
                    exchange.closed = True
                    if modern:
                        handler.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await handler
                    return False
                conn.receive_data(data)
                await handler
        finally:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
            if not handler.done():
                handler.cancel()
        if handler.cancelled():
            exchange.finish(None)
            return True
        out = handler.result()
        status = 200
        if out is not None and modern and not exchange.sse:
            err = _reply_decoder.decode(out).error
            if err is not None:
                status = _ERROR_STATUS.get(err.get("code", 0), 200)
        exchange.finish(out, status)
        return True

    async def _get(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        headers: _Headers,
    ) -> bool:
        sid = _header(headers, b"mcp-session-id")
        if sid is None:
            self._simple(
                conn,
                writer,
                405,
                "no standing stream without a session: the "
                "2026-07-28 protocol uses subscriptions/listen",
                [(b"allow", b"POST")],
            )
            return True
        session = self.sessions.get(sid)
        if session is None:
            self._simple(conn, writer, 404, "no such session")
            return True
        if "text/event-stream" not in (_header(headers, b"accept") or "text/event-stream"):
            self._simple(conn, writer, 406, "accept text/event-stream")
            return True
        if sid in self.streams:
            self._simple(conn, writer, 409, "this session already has a GET stream")
            return True
        exchange = _Exchange(conn, writer, [])
        stream = _Stream(exchange)
        exchange.start_sse()  # commit the stream at once
        self.streams[sid] = stream
        session.push = stream.push
        watcher = asyncio.ensure_future(reader.read(1 << 16))
        ended = asyncio.ensure_future(stream.ended.wait())
        try:
            await writer.drain()
            await asyncio.wait({watcher, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            ended.cancel()
            if session.push == stream.push:
                session.push = None
            if self.streams.get(sid) is stream:
                del self.streams[sid]
        return False


def _header(headers: _Headers, name: bytes) -> str | None:
    for k, v in headers:
        if k == name:
            return v.decode("latin-1")
    return None


async def serve_http(server: McpServer, options: HttpOptions) -> None:
    """Serve MCP over HTTP until cancelled."""
    front = HttpFrontEnd(server, options)
    await front.start()
    log.warning("mcphost serving MCP at %s", front.url)
    try:
        await asyncio.Event().wait()
    finally:
        await front.close()
