"""MCP over streamable HTTP: one endpoint, bearer tokens, limits on everything a client
can make the server hold.

The HTTP/1.1 server is uvicorn's h11 protocol driven by this module's own accept loop
(:mod:`.http_conn`: header deadline, connection caps, accept back-off); the endpoint is a
thin ASGI app (:mod:`.http_app`); handshake-era sessions live in a bounded table that
forgets idle ones (:mod:`.http_sessions`). By default the server binds loopback only,
asks every request for a bearer token made with ``mcphost tokens create``, checks
``Host`` (DNS rebinding) and refuses browser ``Origin`` s other than localhost's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .http_checks import LOOPBACK_NAMES, is_loopback
from .http_conn import ConnectionGuard, Limits, accept_forever, bind, guarded_protocol
from .http_sessions import DEFAULT_IDLE_SECONDS, DEFAULT_MAX_SESSIONS, SessionTable
from .outbox import DEFAULT_OUTBOX_BYTES, Outbox
from .server import McpServer

if TYPE_CHECKING:
    from .http_app import McpApp

__all__ = ["HttpFrontEnd", "HttpOptions", "Limits", "serve_http"]

log = logging.getLogger("mcphost.mcp.http")

_WILDCARDS = {"0.0.0.0", "::", ""}


class HttpOptions:
    """Where and how to serve HTTP."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        path: str = "/mcp",
        allowed_origins: Iterable[str] = (),
        allowed_hosts: Iterable[str] = (),
        allow_remote: bool = False,
        tokens_file: Path | None = None,
        auth: bool = True,
        limits: Limits | None = None,
        session_idle_seconds: float = DEFAULT_IDLE_SECONDS,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        outbox_bytes: int = DEFAULT_OUTBOX_BYTES,
        publish_home: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.path = path if path.startswith("/") else "/" + path
        self.allowed_origins = frozenset(allowed_origins)
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        self.allow_remote = allow_remote
        self.tokens_file = tokens_file
        self.auth = auth
        self.limits = limits or Limits()
        self.session_idle_seconds = session_idle_seconds
        self.max_sessions = max_sessions
        self.outbox_bytes = outbox_bytes
        #: The home whose registry this server publishes to followers (None: it does not).
        self.publish_home = publish_home

    def check(self) -> None:
        """Refuse unsafe combinations (ValueError with what to do)."""
        loopback = is_loopback(self.host)
        if not loopback and not self.allow_remote:
            raise ValueError(
                f"refusing to serve MCP on {self.host}: it is not a loopback address; "
                "pass --allow-remote to do it anyway (tokens stay required)"
            )
        if not self.auth and not loopback:
            raise ValueError(
                f"refusing --no-auth on {self.host}: without tokens only a loopback "
                "address may be served; create a token with `mcphost tokens create NAME`"
            )
        if self.publish_home is not None and not self.auth:
            raise ValueError(
                "refusing --publish-registry with --no-auth: followers present tokens made "
                "with `mcphost tokens create NAME --follow`"
            )
        if self.auth and self.tokens_file is None:
            raise ValueError("HTTP authentication needs a token file (the home's tokens.json)")

    def host_names(self) -> frozenset[str]:
        """The Host header names this server answers to (DNS rebinding protection)."""
        names = set(LOOPBACK_NAMES) | set(self.allowed_hosts)
        if self.host not in _WILDCARDS:
            names.add(self.host.lower())
        else:
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        return frozenset(names)


class HttpFrontEnd:
    """The HTTP server: accepts connections, keeps handshake-era sessions by id."""

    def __init__(self, server: McpServer, options: HttpOptions | None = None) -> None:
        self.server = server
        server.frontend.transport = "http"
        self.options = options or HttpOptions()
        self.options.check()
        self.sessions = SessionTable(
            limit=self.options.max_sessions, idle_seconds=self.options.session_idle_seconds
        )
        self.port = self.options.port
        self.app: McpApp | None = None
        self._sock: socket.socket | None = None
        self._accept: asyncio.Task[None] | None = None
        self._state: Any = None

    @property
    def streams(self) -> dict[str, Outbox]:
        """Open GET streams by session id."""
        return {e.sid: e.stream for e in self.sessions if e.stream is not None}

    async def start(self) -> int:
        """Bind and start accepting; returns the port (useful with port 0)."""
        # uvicorn loads here, never on the stdio path.
        from uvicorn.config import Config
        from uvicorn.server import ServerState

        from .auth import TokenBook
        from .http_app import McpApp

        opts = self.options
        limits = opts.limits
        self._sock = bind(opts.host, opts.port, limits.backlog)
        self.port = self._sock.getsockname()[1]
        self.server.start()
        if not opts.auth:
            log.warning(
                "serving %s WITHOUT authentication (--no-auth): any program on this "
                "machine can call every tool",
                self.url,
            )
        tokens = TokenBook(opts.tokens_file) if opts.auth and opts.tokens_file else None
        if tokens is not None and not tokens.count():
            log.warning(
                "no bearer tokens yet: every request will be refused (401) until one is "
                "made with `mcphost tokens create NAME`"
            )
        self.app = McpApp(
            self.server,
            path=opts.path,
            sessions=self.sessions,
            tokens=tokens,
            allowed_hosts=opts.host_names(),
            allowed_origins=opts.allowed_origins,
            loopback_origins=is_loopback(opts.host),
            body_timeout=limits.body_timeout,
            outbox_bytes=opts.outbox_bytes,
            public_url=lambda: self.url,
            publisher=self._publisher(),
        )
        guard = ConnectionGuard(limits)
        loop = asyncio.get_running_loop()
        config = Config(
            self.app,
            # The loop is the one this runs on (uvloop or asyncio's, chosen by whoever
            # started it): uvicorn serves on it and makes none of its own.
            loop="none",
            http=guarded_protocol(guard),
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_keep_alive=int(max(1, limits.keep_alive)),
            h11_max_incomplete_event_size=64 * 1024,
            backlog=limits.backlog,
        )
        config.load()
        self._state = state = ServerState()

        def make_protocol() -> asyncio.Protocol:
            proto: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=state, app_state={}, _loop=loop
            )
            return proto

        self._accept = loop.create_task(accept_forever(self._sock, guard, make_protocol))
        self.sessions.start()
        return self.port

    def _publisher(self) -> Any:
        if self.options.publish_home is None:
            return None
        from ..home import Home
        from ..publish import Publisher

        return Publisher(Home(self.options.publish_home), self.options.path)

    @property
    def url(self) -> str:
        host = self.options.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}{self.options.path}"

    async def close(self) -> None:
        """Stop accepting, end calls and streams, close every connection."""
        if self._accept is not None:
            self._accept.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept
        if self._sock is not None:
            self._sock.close()
        if self.app is not None:
            self.app.cancel_all()
        await self.sessions.aclose()
        state = self._state
        if state is None:
            return
        for conn in list(state.connections):
            conn.shutdown()
        tasks = list(state.tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        for conn in list(state.connections):
            conn.transport.close()
        for t in list(state.tasks):
            t.cancel()
        await asyncio.gather(*state.tasks, return_exceptions=True)


async def serve_http(
    server: McpServer, options: HttpOptions, on_ready: Callable[[str], None] | None = None
) -> None:
    """Serve MCP over HTTP until cancelled; ``on_ready`` gets the URL once it listens
    (without it, the URL is logged at info level)."""
    front = HttpFrontEnd(server, options)
    await front.start()
    if on_ready is not None:
        on_ready(front.url)
    else:
        log.info("mcphost serving MCP at %s", front.url)
    try:
        await asyncio.Event().wait()
    finally:
        await front.close()
