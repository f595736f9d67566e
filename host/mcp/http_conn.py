"""HTTP connections for the MCP endpoint: uvicorn's HTTP/1.1 protocol (h11) plus the
limits a long-running network server needs and uvicorn does not enforce by itself.

uvicorn brings request parsing, keep-alive with an idle timeout, flow control toward slow
readers and a cap on incomplete header bytes. This module adds:

* a deadline for a request's headers: from the connection's start (or the end of the
  previous answer plus the keep-alive time) the headers must be complete in
  ``header_timeout`` seconds, or the connection gets 408 and is closed (uvicorn's
  keep-alive timer stops at the first byte, so a slowloris client was never closed);
* a cap on open connections, in all and per client address, checked when a connection
  is accepted: one over the cap gets 503 and is closed at once;
* its own accept loop, which backs off when ``accept`` fails (out of file descriptors)
  and says so in one log line, instead of asyncio's, which on Python 3.11 logs a
  traceback per attempt and retries in a tight loop.

The body deadline is the ASGI app's (it reads the body); see :mod:`.http_app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
from collections import Counter
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.utils import get_remote_addr

from mcphost.sdk.errors import ConfigError

__all__ = ["ConnectionGuard", "Limits", "accept_forever", "bind", "guarded_protocol"]

log = logging.getLogger("mcphost.mcp.http")

_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"retry-after: 5\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
)
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


def _canned(template: bytes, text: str) -> bytes:
    body = (text + "\n").encode()
    return template % (len(body), body)


class Limits:
    """Time and count limits of the HTTP server (the CLI maps its options here)."""

    def __init__(
        self,
        *,
        header_timeout: float = 10.0,
        body_timeout: float = 30.0,
        keep_alive: float = 5.0,
        max_connections: int = 256,
        max_per_client: int = 64,
        backlog: int = 128,
    ) -> None:
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.keep_alive = keep_alive
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.backlog = backlog


class ConnectionGuard:
    """Counts open connections, in all and per client address, against the caps."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.max_connections = limits.max_connections
        if soft != resource.RLIM_INFINITY and soft // 2 < self.max_connections:
            # Half the descriptors stay for workers, files and the listening socket.
            self.max_connections = max(4, soft // 2)
            log.warning(
                "serving at most %d HTTP connections: the open-files limit is %d "
                "(raise it with `ulimit -n` to allow --max-connections %d)",
                self.max_connections,
                soft,
                limits.max_connections,
            )
        self.total = 0
        self.by_client: Counter[str] = Counter()

    def admit(self, client: str) -> str | None:
        """Count a new connection from ``client``; the reason it is refused, if it is."""
        if self.total >= self.max_connections:
            return f"this server has its limit of {self.max_connections} connections open"
        if self.by_client[client] >= self.limits.max_per_client:
            return (
                f"your address has its limit of {self.limits.max_per_client} "
                "connections to this server open"
            )
        self.total += 1
        self.by_client[client] += 1
        return None

    def release(self, client: str) -> None:
        self.total -= 1
        self.by_client[client] -= 1
        if self.by_client[client] <= 0:
            del self.by_client[client]


class _GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and the connection count kept."""

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._client_host = ""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        addr = get_remote_addr(transport)
        self._client_host = addr[0] if addr else ""
        self._arm(self.guard.limits.header_timeout)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._headers_late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.write(_canned(_TIMED_OUT, "the request headers did not arrive in time"))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._deadline is not None and self.conn.their_state is not h11.IDLE:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm(self.guard.limits.keep_alive + self.guard.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.release(self._client_host)
        super().connection_lost(exc)


def guarded_protocol(guard: ConnectionGuard) -> type[H11Protocol]:
    """The protocol class of one server, bound to its guard."""
    return type("McpHttpProtocol", (_GuardedProtocol,), {"guard": guard})


def bind(host: str, port: int, backlog: int) -> socket.socket:
    """The listening socket, or a one-line :class:`ConfigError` saying what to do."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=backlog)
    except OSError as exc:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"cannot serve HTTP on {where}: the port is already in use (another "
                "mcphost serve?); stop that program or choose another port with "
                "--http HOST:PORT"
            ) from None
        raise ConfigError(
            f"cannot serve HTTP on {where}: {exc.strerror or exc}; "
            "check the address and port given to --http"
        ) from None
    sock.setblocking(False)
    return sock


async def accept_forever(
    sock: socket.socket, guard: ConnectionGuard, make_protocol: Callable[[], asyncio.Protocol]
) -> None:
    """Accept connections until cancelled, under the guard's caps, backing off (from
    50 ms up to 1 s) while ``accept`` fails for want of resources."""
    loop = asyncio.get_running_loop()
    delay = 0.05
    failing = False
    while True:
        try:
            conn, addr = await loop.sock_accept(sock)
        except OSError as exc:
            if exc.errno not in _RESOURCE_ERRNOS and exc.errno != errno.ECONNABORTED:
                raise
            if not failing and exc.errno != errno.ECONNABORTED:
                failing = True
                log.warning(
                    "cannot accept HTTP connections: %s; retrying with back-off "
                    "(raise the open-files limit with `ulimit -n`, or lower --max-connections)",
                    exc.strerror or exc,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            continue
        if failing:
            failing = False
            log.warning("accepting HTTP connections again")
        delay = 0.05
        client = addr[0] if isinstance(addr, tuple) else ""
        reason = guard.admit(client)
        if reason is not None:
            with contextlib.suppress(OSError):
                conn.send(_canned(_REFUSED, reason + "; try again later"))
            conn.close()
            continue
        # asyncio sets TCP_NODELAY only on sockets made with proto=IPPROTO_TCP, which an
        # accepted socket is not: without it an answer's body waits for the client's
        # delayed ACK of its headers (40 ms a request).
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await loop.connect_accepted_socket(make_protocol, conn)
        except OSError:
            guard.release(client)
            conn.close()
