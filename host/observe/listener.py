"""``serve --metrics HOST:PORT``: Prometheus text format at ``/metrics`` on a listener of
its own, served by uvicorn's HTTP/1.1 protocol on the running loop (the MCP front end's
HTTP stack; no thread, no second loop).

Loopback addresses only unless the operator allows remote binding: the page tells
which plugins and tools run.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mcphost.sdk.errors import ConfigError

from .frontend import FrontEndMetrics
from .metrics import HostMetrics

if TYPE_CHECKING:
    from ..host import Host

__all__ = ["CONTENT_TYPE", "MetricsListener", "parse_bind"]

log = logging.getLogger("mcphost.observe")
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
Source = Callable[[], "Host | None"]


def parse_bind(value: str, *, allow_remote: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` of ``--metrics`` as (host, port), or a one-line error."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--metrics {value!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    host = host.strip("[]") or "127.0.0.1"
    if not allow_remote and not _loopback(host):
        raise ConfigError(
            f"--metrics {value!r}: {host} is not a loopback address; serve metrics on "
            "127.0.0.1, or add --allow-remote to expose them on the network"
        )
    return host, int(port)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MetricsListener:
    """Answers ``GET /metrics`` with the metrics of the host ``source()`` returns. While
    that is None (the host is still being made) the answer holds only ``frontend``'s
    counts; a host made with metrics off answers 404."""

    def __init__(
        self,
        source: Source,
        host: str = "127.0.0.1",
        port: int = 9464,
        *,
        frontend: FrontEndMetrics | None = None,
    ) -> None:
        self.source = source
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
        status, ctype, body = self.answer(scope["method"], scope["path"])
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", b"%d" % len(body))],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    def answer(self, method: str, path: str) -> tuple[int, bytes, bytes]:
        plain = b"text/plain; charset=utf-8"
        if path != "/metrics":
            return 404, plain, b"not found: metrics are at /metrics\n"
        if method not in ("GET", "HEAD"):
            return 405, plain, b"only GET /metrics\n"
        host = self.source()
        metrics = self._starting if host is None else host.metrics
        if metrics is None:
            return 404, plain, b"this host counts no metrics (made with metrics=False)\n"
        from .export import render

        return 200, CONTENT_TYPE, render(metrics, host)

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
