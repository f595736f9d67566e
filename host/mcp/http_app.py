"""The MCP endpoint as a thin ASGI app: checks, then POST / GET / DELETE.

Both eras share the endpoint:

* handshake era: ``initialize`` creates a session and answers with ``Mcp-Session-Id``;
  later requests name it; ``GET`` opens the session's stream for list_changed and log
  notifications; ``DELETE`` ends the session (see :mod:`.http_sessions`).
* 2026-07-28: every POST stands alone (``_meta`` envelope, ``MCP-Protocol-Version``
  header equal to it); closing the response stream cancels the call; ``GET`` is 405.

An answer starts as JSON and turns into an SSE stream the moment a notification for it
(progress, log) has to go out first; :mod:`.http_streams` writes both kinds of stream
from bounded outboxes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import msgspec

from mcphost.security.tokens import Token

from .auth import TokenBook, challenge, resource_metadata
from .features import PLUGIN_FEATURE_METHODS
from .http_checks import (
    check_accept,
    check_content_type,
    check_framing,
    check_host,
    check_origin,
    header,
)
from .http_sessions import HttpSession, SessionTable
from .http_streams import (
    Headers,
    Notifier,
    Receive,
    Send,
    answer_request,
    new_outbox,
    send_json,
    send_plain,
    stream_session,
)
from .jsonrpc import (
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    UNSUPPORTED_PROTOCOL_VERSION,
    Message,
    RpcError,
    decode_message,
    error_response,
    rejection,
)
from .server import HANDSHAKE_VERSIONS, McpServer
from .session import PROTOCOL_VERSION_KEY, Session, has_envelope

if TYPE_CHECKING:
    from ..publish import Publisher

__all__ = ["McpApp"]

Scope = MutableMapping[str, Any]

_ERROR_STATUS = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    UNSUPPORTED_PROTOCOL_VERSION: 400,
    METHOD_NOT_FOUND: 404,
}
_CLOSE: Headers = [(b"connection", b"close")]


class _Reply(msgspec.Struct):
    error: dict[str, Any] | None = None


class _ToolsReply(msgspec.Struct):
    jsonrpc: str
    id: int | str
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


_reply_decoder = msgspec.json.Decoder(_Reply)
_tools_decoder = msgspec.json.Decoder(_ToolsReply)
_encoder = msgspec.json.Encoder()


class McpApp:
    """The ASGI app of the endpoint; state lives in the :class:`HttpFrontEnd` that owns it."""

    def __init__(
        self,
        server: McpServer,
        *,
        path: str,
        sessions: SessionTable,
        tokens: TokenBook | None,
        allowed_hosts: frozenset[str] | None,
        allowed_origins: frozenset[str],
        loopback_origins: bool,
        body_timeout: float,
        outbox_bytes: int,
        public_url: Callable[[], str],
        publisher: Publisher | None = None,
    ) -> None:
        self.server = server
        #: The published registry's routes (``serve --publish-registry``), if any.
        self.publisher = publisher
        self.path = path
        self.metadata_path = "/.well-known/oauth-protected-resource" + path
        self.sessions = sessions
        self.tokens = tokens
        self.allowed_hosts = allowed_hosts
        self.allowed_origins = allowed_origins
        self.loopback_origins = loopback_origins
        self.body_timeout = body_timeout
        self.outbox_bytes = outbox_bytes
        self.public_url = public_url
        self._handlers: set[asyncio.Future[bytes | None]] = set()

    def cancel_all(self) -> None:
        """Cancel every request in progress (the server is stopping)."""
        for h in list(self._handlers):
            h.cancel()

    # -- plain answers ---------------------------------------------------------------
    _plain = staticmethod(send_plain)
    _json = staticmethod(send_json)

    async def _rpc_error(
        self,
        send: Send,
        status: int,
        err: RpcError,
        rid: Any = None,
        headers: Headers | None = None,
    ) -> None:
        await self._json(send, status, error_response(rid, err), headers)

    # -- entry -----------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers: Headers = scope["headers"]
        refused = check_framing(headers)
        fe = self.server.frontend
        if refused is not None:
            fe.reject("bad_framing")
            await self._plain(send, *refused, _CLOSE)
            return

        raw_send = send

        async def counted(message: MutableMapping[str, Any]) -> None:
            fe.bytes_out += len(message.get("body", b""))
            await raw_send(message)

        send = counted
        path: str = scope["path"]
        method: str = scope["method"]
        if path == self.metadata_path and method == "GET":
            await self._json(send, 200, _encoder.encode(resource_metadata(self.public_url())))
            return
        publishing = self.publisher is not None and self.publisher.owns(path)
        if path != self.path and not publishing:
            await self._plain(send, 404, f"not found: the MCP endpoint is {self.path}")
            return
        refused = check_host(headers, self.allowed_hosts) or check_origin(
            headers, self.allowed_origins, loopback_ok=self.loopback_origins
        )
        if refused is not None:
            fe.reject("forbidden_host_or_origin")
            await self._plain(send, *refused)
            return
        token: Token | None = None
        if self.tokens is not None:
            token, why = self.tokens.authenticate(header(headers, b"authorization"))
            if token is None:
                fe.reject("unauthorized")
                meta_url = self.public_url().rsplit(self.path, 1)[0] + self.metadata_path
                hdr = challenge(meta_url, invalid=header(headers, b"authorization") is not None)
                await self._plain(send, 401, why, [(b"www-authenticate", hdr)])
                return
        if publishing or (token is not None and token.follow):
            await self._follower(scope, send, token, publishing)
            return
        if method == "POST":
            await self._post(scope, receive, send, token)
        elif method == "GET":
            await self._get(receive, send, headers, token)
        elif method == "DELETE":
            await self._delete(send, headers, token)
        else:
            await self._plain(
                send, 405, "use POST, GET or DELETE", [(b"allow", b"GET, POST, DELETE")]
            )

    async def _follower(
        self, scope: Scope, send: Send, token: Token | None, publishing: bool
    ) -> None:
        """The published registry, for followers' tokens only; they call no tool."""
        if not publishing:
            assert token is not None
            self.server.frontend.reject("forbidden_follower_token")
            await self._plain(
                send,
                403,
                f"token {token.name!r} is a follower's token: it reads the published registry "
                "and calls no tool; give MCP clients a token made without --follow",
            )
            return
        if token is None or not token.follow:
            self.server.frontend.reject("forbidden_not_follower")
            await self._plain(
                send,
                403,
                "the published registry is for followers' tokens only: make one with "
                "`mcphost tokens create NAME --follow` on this (the primary's) home",
            )
            return
        assert self.publisher is not None
        await self.publisher(
            scope["path"], scope["method"], header(scope["headers"], b"if-none-match"), send
        )

    def _session(
        self, headers: Headers, token: Token | None
    ) -> tuple[str | None, HttpSession | None]:
        sid = header(headers, b"mcp-session-id")
        entry = self.sessions.get(sid) if sid else None
        if (
            entry is not None
            and token is not None
            and (entry.owner is None or entry.owner.sha256 != token.sha256)
        ):
            entry = None  # another token's session does not exist for this one
        return sid, entry

    async def _delete(self, send: Send, headers: Headers, token: Token | None) -> None:
        sid, entry = self._session(headers, token)
        if entry is None:
            await self._plain(send, 404 if sid else 400, "no such session")
            return
        self.sessions.close(entry.sid)
        await self._plain(send, 200, "session ended")

    # -- POST ------------------------------------------------------------------------
    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The request body, or None after refusing it (too large, too slow, client gone)."""
        limit = self.server.options.max_message_bytes
        length = header(scope["headers"], b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            self.server.frontend.reject("too_large")
            text = f"request body of {length} bytes is over the limit of {limit} bytes"
            await self._plain(send, 413, text, _CLOSE)
            return None
        body = bytearray()
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        return None
                    body += msg.get("body", b"")
                    if len(body) > limit:
                        self.server.frontend.reject("too_large")
                        text = f"request body is over the limit of {limit} bytes"
                        await self._plain(send, 413, text, _CLOSE)
                        return None
                    if not msg.get("more_body", False):
                        self.server.frontend.bytes_in += len(body)
                        return bytes(body)
        except TimeoutError:
            self.server.frontend.reject("body_timeout")
            text = f"the request body did not arrive within {self.body_timeout:g} seconds"
            await self._plain(send, 408, text, _CLOSE)
            return None

    async def _post(self, scope: Scope, receive: Receive, send: Send, token: Token | None) -> None:
        headers: Headers = scope["headers"]
        refused = check_content_type(headers) or check_accept(headers)
        if refused is not None:
            await self._plain(send, *refused)
            return
        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        try:
            msg = decode_message(body)
        except RpcError as bad:
            self.server.frontend.reject(rejection(bad))
            await self._rpc_error(send, 400, bad, bad.id)
            return
        except RecursionError:
            self.server.frontend.reject("parse_error")
            nested = RpcError(PARSE_ERROR, "the JSON nests too deeply; send a flatter message")
            await self._rpc_error(send, 400, nested)
            return
        sid, entry = self._session(headers, token)
        if not msg.is_request:
            if entry is not None and msg.is_notification:
                entry.session.handle_notification(msg)
            elif entry is not None:  # the answer to a tool's question (sampling, ...)
                entry.session.handle_response(msg)
            await send(
                {
                    "type": "http.response.start",
                    "status": 202,
                    "headers": [(b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        params = msg.params if isinstance(msg.params, dict) else None
        if msg.method == "initialize":
            await self._initialize(receive, send, msg, token)
            return
        version_header = header(headers, b"mcp-protocol-version")
        if sid is None and has_envelope(params):
            assert params is not None
            if version_header != params["_meta"][PROTOCOL_VERSION_KEY]:
                err = RpcError(
                    HEADER_MISMATCH,
                    "the MCP-Protocol-Version header must equal the "
                    "protocol version in the request's _meta",
                )
                await self._rpc_error(send, 400, err, msg.id)
                return
            session = Session(self.server, era="modern")
            try:
                await self._answer(receive, send, session, msg, [], token, modern=True)
            finally:
                session.close()
            return
        if sid is None:
            err = RpcError(
                INVALID_REQUEST,
                "missing Mcp-Session-Id header: send initialize first, or "
                "use the 2026-07-28 per-request _meta envelope",
            )
            await self._rpc_error(send, 400, err, msg.id)
            return
        if entry is None:
            await self._plain(
                send,
                404,
                "no such session; it ended, expired or the server restarted: initialize again",
            )
            return
        if version_header is not None and version_header not in HANDSHAKE_VERSIONS:
            err = RpcError(INVALID_REQUEST, f"unsupported MCP-Protocol-Version {version_header!r}")
            await self._rpc_error(send, 400, err, msg.id)
            return
        with entry.in_use():
            await self._answer(receive, send, entry.session, msg, [], token, modern=False)

    async def _initialize(
        self, receive: Receive, send: Send, msg: Message, token: Token | None
    ) -> None:
        if self.sessions.full:
            err = RpcError(
                INTERNAL_ERROR,
                f"this server has its limit of {self.sessions.limit} sessions open; end an "
                "unused one (DELETE) or wait for idle ones to expire, then initialize again",
            )
            await self._rpc_error(send, 503, err, msg.id, [(b"retry-after", b"5")])
            return
        session = Session(self.server, era="legacy")
        entry = self.sessions.add(session, token)
        with entry.in_use():
            await self._answer(
                receive,
                send,
                session,
                msg,
                [(b"mcp-session-id", entry.sid.encode())],
                token,
                modern=False,
            )
        if session.version is None:
            self.sessions.close(entry.sid)

    def _forbidden_tool(self, msg: Message, token: Token | None) -> RpcError | None:
        if token is not None and token.tools and msg.method in PLUGIN_FEATURE_METHODS:
            # A token limited to some tools reaches no plugin's resources or prompts.
            return RpcError(
                INVALID_PARAMS,
                f"token {token.name!r} may call only the tools {', '.join(token.tools)}; "
                f"{msg.method} needs a token without a tool list",
                data={"method": msg.method},
            )
        if token is None or not token.tools or msg.method != "tools/call":
            return None
        name = msg.params.get("name") if isinstance(msg.params, dict) else None
        if isinstance(name, str) and not token.allows(name):
            return RpcError(
                INVALID_PARAMS,
                f"tool {name!r} is not allowed for token {token.name!r} (it may use "
                f"{', '.join(token.tools)}); tools/list shows the tools it may call",
                data={"tool": name},
            )
        return None

    @staticmethod
    def _filter_tools(out: bytes, token: Token) -> bytes:
        reply = _tools_decoder.decode(out)
        if reply.result is None or not isinstance(reply.result.get("tools"), list):
            return out
        reply.result["tools"] = [
            t
            for t in reply.result["tools"]
            if isinstance(t, dict) and token.allows(t.get("name", ""))
        ]
        return _encoder.encode(reply)

    async def _answer(
        self,
        receive: Receive,
        send: Send,
        session: Session,
        msg: Message,
        headers: Headers,
        token: Token | None,
        *,
        modern: bool,
    ) -> None:
        """Answer one request, streaming its notifications first if any; a client that
        goes away cancels a 2026-07-28 call (closing the stream is its cancellation)."""
        forbidden = self._forbidden_tool(msg, token)
        if forbidden is not None:
            await self._rpc_error(send, 400 if modern else 200, forbidden, msg.id, headers)
            return
        outbox = new_outbox(self.outbox_bytes)
        handler = asyncio.ensure_future(session.handle_request(msg, Notifier(outbox)))
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)

        def finish(out: bytes) -> tuple[bytes, int]:
            if token is not None and token.tools and msg.method == "tools/list":
                out = self._filter_tools(out, token)
            status = 200
            if modern:
                err = _reply_decoder.decode(out).error
                if err is not None:
                    status = _ERROR_STATUS.get(err.get("code", 0), 200)
            return out, status

        await answer_request(
            receive, send, handler, outbox, headers=headers, cancel_when_gone=modern, finish=finish
        )

    # -- GET -------------------------------------------------------------------------
    async def _get(
        self, receive: Receive, send: Send, headers: Headers, token: Token | None
    ) -> None:
        sid, entry = self._session(headers, token)
        if sid is None:
            await self._plain(
                send,
                405,
                "no standing stream without a session: the 2026-07-28 protocol "
                "uses subscriptions/listen",
                [(b"allow", b"POST")],
            )
            return
        if entry is None:
            await self._plain(send, 404, "no such session; it ended or expired: initialize again")
            return
        refused = check_accept(headers, stream_only=True)
        if refused is not None:
            await self._plain(send, *refused)
            return
        if entry.stream is not None:
            await self._plain(send, 409, "this session already has a GET stream")
            return
        outbox = new_outbox(self.outbox_bytes)
        entry.stream = outbox
        session = entry.session
        session.push = outbox.notify
        try:
            await stream_session(receive, send, outbox)
        finally:
            if session.push == outbox.notify:
                session.push = None
            if entry.stream is outbox:
                entry.stream = None
                entry.last_used = time.monotonic()
