"""``serve --metrics HOST:PORT``: Prometheus text format at ``/metrics`` on a listener of
its own, served by uvicorn's HTTP/1.1 protocol on the running loop (the MCP front end's
HTTP stack; no thread, no second loop). The same listener serves the status page at
``/`` (:mod:`.page`) and its data at ``/status.json`` (what ``mcphost status`` shows),
behind the HTTP front end's bearer tokens (:class:`PageAuth`); ``/metrics`` asks for no
token, as scrapers expect.

Loopback addresses only unless the operator allows remote binding: the page tells
which plugins and tools run.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import secrets
import socket
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs

from mcphost.sdk.errors import ConfigError

from .frontend import FrontEndMetrics
from .metrics import HostMetrics

if TYPE_CHECKING:
    from ..host import Host

__all__ = [
    "CONTENT_TYPE",
    "COOKIE",
    "MetricsListener",
    "PageAuth",
    "Tokens",
    "loopback",
    "parse_bind",
]

log = logging.getLogger("mcphost.observe")
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
Source = Callable[[], "Host | None"]
#: The cookie of a browser signed in to the status page.
COOKIE = "mcphost_page"


def parse_bind(value: str, *, allow_remote: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` of ``--metrics`` as (host, port), or a one-line error."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--metrics {value!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    host = host.strip("[]") or "127.0.0.1"
    if not allow_remote and not loopback(host):
        raise ConfigError(
            f"--metrics {value!r}: {host} is not a loopback address; serve metrics on "
            "127.0.0.1, or add --allow-remote to expose them on the network"
        )
    return host, int(port)


def loopback(host: str) -> bool:
    """Whether ``host`` names this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MetricsListener:
    """Answers ``GET /metrics`` with the metrics of the host ``source()`` returns. While
    that is None (the host is still being made) the answer holds only ``frontend``'s
    counts; a host made with metrics off answers 404. ``GET /`` and ``/status.json``:
    the status page and its data, for whom ``auth`` allows (anyone when it is None)."""

    def __init__(
        self,
        source: Source,
        host: str = "127.0.0.1",
        port: int = 9464,
        *,
        frontend: FrontEndMetrics | None = None,
        auth: PageAuth | None = None,
    ) -> None:
        self.source = source
        #: Who may see the status page (None: anyone who reaches the listener).
        self.auth = auth
        self._starting = HostMetrics()
        self._starting.frontend = frontend
        self.host = host
        self.port = port
        self._server: asyncio.AbstractServer | None = None
        self._state: Any = None

    async def start(self) -> int:
        """Bind and serve; returns the port (useful with port 0)."""
        from uvicorn.config import Config
        from uvicorn.server import ServerState

        try:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.create_server((self.host, self.port), family=family, backlog=64)
        except OSError as exc:
            why = (
                "the port is already in use"
                if exc.errno == errno.EADDRINUSE
                else (exc.strerror or str(exc))
            )
            raise ConfigError(
                f"cannot serve metrics on {self.host}:{self.port}: {why}; choose another "
                "address with --metrics HOST:PORT"
            ) from None
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = Config(
            self.app,
            loop="none",
            http="h11",
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_keep_alive=5,
        )
        config.load()
        loop = asyncio.get_running_loop()
        self._state = state = ServerState()

        def make_protocol() -> asyncio.Protocol:
            proto: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=state, app_state={}, _loop=loop
            )
            return proto

        self._server = await loop.create_server(make_protocol, sock=sock)
        return self.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if path in ("/", "/status.json"):
            status, headers, body = await self.page_answer(scope)
        else:
            status, ctype, body = self.answer(method, path)
            headers = [(b"content-type", ctype)]
        headers.append((b"content-length", b"%d" % len(body)))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    def answer(self, method: str, path: str) -> tuple[int, bytes, bytes]:
        plain = b"text/plain; charset=utf-8"
        if path != "/metrics":
            return 404, plain, b"not found: metrics are at /metrics, the status page at /\n"
        if method not in ("GET", "HEAD"):
            return 405, plain, b"only GET /metrics\n"
        host = self.source()
        metrics = self._starting if host is None else host.metrics
        if metrics is None:
            return 404, plain, b"this host counts no metrics (made with metrics=False)\n"
        from .export import render

        return 200, CONTENT_TYPE, render(metrics, host)

    async def page_answer(self, scope: dict[str, Any]) -> tuple[int, Headers, bytes]:
        """``/`` (the page) and ``/status.json`` (its data: what ``mcphost status``
        gets), behind the bearer tokens of the HTTP front end; see :class:`PageAuth`."""
        if scope["method"] not in ("GET", "HEAD"):
            return _text(405, "only GET\n")
        request = _Request(scope)
        auth = self.auth
        if auth is not None:
            given = request.query.get("token")
            if scope["path"] == "/" and given is not None:
                cookie = auth.sign_in(given)
                if cookie is None:
                    return _text(401, auth.REFUSED + "\n")
                # The token leaves the address bar (and the history's next entry).
                return (
                    303,
                    [
                        (b"location", b"/"),
                        (b"set-cookie", cookie.encode()),
                        (b"cache-control", b"no-store"),
                        (b"content-type", b"text/plain; charset=utf-8"),
                    ],
                    b"signed in\n",
                )
            if not auth.allowed(request.headers.get("authorization"), request.cookie()):
                return _text(401, auth.REFUSED + "\n", challenge=True)
        if scope["path"] == "/":
            from .page import page

            nonce = secrets.token_urlsafe(16)
            return (
                200,
                [
                    (b"content-type", b"text/html; charset=utf-8"),
                    (b"cache-control", b"no-store"),
                    (b"content-security-policy", _csp(nonce)),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-content-type-options", b"nosniff"),
                ],
                page(nonce),
            )
        host = self.source()
        if host is None:
            return _text(503, "the host is starting; try again in a moment\n")
        from .status import status_of

        body = json.dumps(await status_of(host), default=str).encode()
        return (
            200,
            [
                (b"content-type", b"application/json"),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
            ],
            body,
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        state = self._state
        if state is not None:
            for conn in list(state.connections):
                conn.shutdown()
            for t in list(state.tasks):
                t.cancel()
            await asyncio.gather(*state.tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


Headers = list[tuple[bytes, bytes]]


def _text(status: int, text: str, *, challenge: bool = False) -> tuple[int, Headers, bytes]:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store")]
    if challenge:
        headers.append((b"www-authenticate", b'Bearer realm="mcphost"'))
    return status, headers, text.encode()


def _csp(nonce: str) -> bytes:
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ).encode()


class _Request:
    """The parts of an ASGI request the page reads."""

    def __init__(self, scope: dict[str, Any]) -> None:
        self.headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
        }
        self.query = {
            k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()
        }

    def cookie(self) -> str | None:
        jar = SimpleCookie()
        try:
            jar.load(self.headers.get("cookie", ""))
        except CookieError:
            return None
        morsel = jar.get(COOKIE)
        return None if morsel is None else morsel.value


class Tokens(Protocol):
    """The bearer tokens the HTTP front end accepts (``mcp.auth.TokenBook``)."""

    def authenticate(self, authorization: str | None) -> tuple[Any, str]: ...

    def current(self, token: Any) -> bool: ...


class PageAuth:
    """Who may see the page: a request with the front end's ``Authorization: Bearer``
    header, or a browser signed in once with ``/?token=<token>``. Signing in sets a
    cookie (HttpOnly, SameSite=Strict) holding a random key of this listener's own, never
    the token; the token behind it is checked again on every request, so revoking it
    signs the browser out. The tokens are made on first use (``tokens()``)."""

    REFUSED = (
        "this page needs a bearer token: open /?token=<token> once in the browser, or send "
        "'Authorization: Bearer <token>' (make one with `mcphost tokens create NAME`; the "
        "page shows every plugin, so a token limited with --tools does not open it)"
    )
    #: Most browsers signed in at once (the oldest is signed out).
    MAX_SESSIONS = 64

    def __init__(self, tokens: Callable[[], Tokens]) -> None:
        self._make = tokens
        self._tokens: Tokens | None = None
        self._sessions: dict[str, Any] = {}

    @property
    def tokens(self) -> Tokens:
        if self._tokens is None:
            self._tokens = self._make()
        return self._tokens

    def sign_in(self, secret: str) -> str | None:
        """The Set-Cookie value for a browser that gave a valid token; None if invalid."""
        token, _why = self.tokens.authenticate(f"Bearer {secret}")
        if not _whole(token):
            return None
        key = secrets.token_urlsafe(32)
        self._sessions[key] = token
        while len(self._sessions) > self.MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        return f"{COOKIE}={key}; Path=/; HttpOnly; SameSite=Strict"

    def allowed(self, authorization: str | None, cookie: str | None) -> bool:
        if authorization is not None:
            return _whole(self.tokens.authenticate(authorization)[0])
        token = None if cookie is None else self._sessions.get(cookie)
        if token is None:
            return False
        if not self.tokens.current(token):
            self._sessions.pop(cookie or "", None)
            return False
        return True


def _whole(token: Any) -> bool:
    """Whether ``token`` is valid and limited to no tools (the page shows them all)."""
    return token is not None and not getattr(token, "tools", ())
