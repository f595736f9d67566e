"""The MCP server state every connection shares: the host, its tool catalog, the sessions.

:class:`McpServer` starts the :class:`~mcphost.host.Host` in the background as soon as
serving begins (the host's modules are imported on a thread), so a client's
``initialize`` (or ``server/discover``) is answered at once while the host, and with
``start_workers`` every plugin's worker, starts; ``tools/list`` and ``tools/call`` wait
until the host knows its plugins. It listens to the host's events and
fans them out: a changed tool set becomes ``notifications/tools/list_changed``. A log
line written during a call goes to the session that made the call only (the session
passes its own callback down with the call); lines outside any call, such as what a
plugin prints, go to the server log, and to sessions only with ``forward_plugin_logs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mcphost.sdk.errors import ConfigError

from ..observe.frontend import FrontEndMetrics
from .catalog import Catalog
from .jsonrpc import INTERNAL_ERROR, RpcError

if TYPE_CHECKING:
    from ..host import Host, HostEvent
    from .session import Session

__all__ = [
    "HANDSHAKE_VERSIONS",
    "LATEST_HANDSHAKE_VERSION",
    "LOG_LEVELS",
    "MODERN_VERSIONS",
    "McpServer",
    "ServerOptions",
]

log = logging.getLogger("mcphost.mcp")

#: Revisions reached through the ``initialize`` handshake, oldest first.
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_HANDSHAKE_VERSION = HANDSHAKE_VERSIONS[-1]
#: Stateless revisions: the version travels in each request's ``_meta``.
MODERN_VERSIONS = ("2026-07-28",)
#: What the handshake era's ``initialize`` declares (the 2026-07-28 era subscribes to
#: resources on ``subscriptions/listen``, so ``server/discover`` leaves out ``subscribe``).
CAPABILITIES: dict[str, Any] = {
    "tools": {"listChanged": True},
    "logging": {},
    "resources": {"subscribe": True, "listChanged": True},
    "prompts": {"listChanged": True},
    "completions": {},
}
#: MCP log levels (RFC 5424 order) and their rank.
LOG_LEVELS = {
    "debug": 0,
    "info": 1,
    "notice": 2,
    "warning": 3,
    "error": 4,
    "critical": 5,
    "alert": 6,
    "emergency": 7,
}


class ServerOptions:
    """Knobs of the MCP front end (the CLI maps its options here)."""

    def __init__(
        self,
        *,
        name: str = "mcphost",
        version: str = "0",
        page_size: int = 100,
        max_message_bytes: int = 4 * 1024 * 1024,
        tools_ttl_ms: int = 0,
        default_log_level: str = "info",
        instructions: str | None = None,
        forward_plugin_logs: bool = False,
        start_workers: bool = False,
    ) -> None:
        self.name = name
        self.version = version
        self.page_size = page_size
        self.max_message_bytes = max_message_bytes
        self.tools_ttl_ms = tools_ttl_ms
        if default_log_level not in LOG_LEVELS:
            raise ConfigError(
                f"default_log_level {default_log_level!r} is not an MCP log level; use one "
                "of: " + ", ".join(LOG_LEVELS)
            )
        #: Least severe plugin log line a handshake-era session gets until it sets one.
        self.default_log_level = default_log_level
        #: Sent to clients as ``instructions`` (initialize, server/discover); None: none.
        self.instructions = instructions
        #: Also send plugin log lines written outside any call to every session.
        self.forward_plugin_logs = forward_plugin_logs
        #: Start every plugin's worker as soon as the host has started, rather than on
        #: each plugin's first call (``mcphost serve`` does).
        self.start_workers = start_workers


class McpServer:
    """Serves one :class:`Host` to any number of MCP sessions (stdio: one; HTTP: many)."""

    def __init__(
        self, host: Host | Callable[[], Host], options: ServerOptions | None = None
    ) -> None:
        # A factory makes the host when serving begins, on a thread: `mcphost serve`
        # answers initialize while the host's modules (configuration models,
        # supervision) are still being imported.
        self._host: Host | None = None if callable(host) else host
        self._make_host: Callable[[], Host] | None = host if callable(host) else None
        self.options = options or ServerOptions()
        self.sessions: set[Session] = set()
        self._catalog: Catalog | None = None
        self._ready: asyncio.Task[None] | None = None
        self._remove_listener: Callable[[], None] | None = None
        self.server_info = {"name": self.options.name, "version": self.options.version}
        #: Requests, bytes and refused inputs of every session (plain counts; exported
        #: with the host's metrics once the host is made).
        self.frontend = FrontEndMetrics()
        self.frontend.open_sessions = lambda: len(self.sessions)
        #: 2026-07-28 calls waiting for their client's answers, by requestState.
        self.parked: dict[str, Any] = {}

    @property
    def host(self) -> Host:
        if self._host is None:
            assert self._make_host is not None
            self._host = self._make_host()
        return self._host

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        """Begin starting the host; requests that need tools wait for it."""
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_task(self._start_host())

    async def _start_host(self) -> None:
        if self._host is None:
            # Importing the host's modules (configuration models, supervision, the
            # sandbox client) takes longer than answering a handshake: in a thread, so the
            # loop answers initialize meanwhile.
            self._host = await asyncio.to_thread(self._make_one)
        host = self._host
        if host.metrics is not None:
            host.metrics.frontend = self.frontend
        await host.start()
        self._remove_listener = host.add_listener(self._on_event)
        if self.options.start_workers:
            host.start_workers()

    @property
    def made_host(self) -> Host | None:
        """The host once it is made (None before: making it is not started here)."""
        return self._host

    def _make_one(self) -> Host:
        assert self._make_host is not None
        return self._make_host()

    async def ready(self) -> Host:
        """The started host; raises an RPC error saying why if it could not start."""
        if self._ready is None:
            self.start()
        assert self._ready is not None
        try:
            await asyncio.shield(self._ready)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise RpcError(
                INTERNAL_ERROR,
                f"the mcphost host could not start: {exc}; run `mcphost doctor` to see why",
            ) from None
        return self.host

    async def close(self) -> None:
        """Stop the host and everything it runs."""
        for s in list(self.sessions):
            s.close()
        if self._remove_listener is not None:
            with contextlib.suppress(ValueError):
                self._remove_listener()
        if self._ready is not None:
            # Let a start in progress finish first: a worker half spawned when its start
            # is cancelled could outlive the host. Bounded, then cancelled after all.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._ready), 30)
            if not self._ready.done():
                self._ready.cancel()
            with contextlib.suppress(BaseException):
                await self._ready
        if self._host is not None:
            await self._host.close()

    # -- tools ---------------------------------------------------------------------
    async def catalog(self) -> Catalog:
        host = await self.ready()
        if self._catalog is None:
            self._catalog = Catalog(host.tools(), self.options.page_size)
        return self._catalog

    @property
    def call_timeout(self) -> float:
        """Seconds a call may run: the host's configuration, or its default while no
        host exists yet (making one just to ask would import it on the stdio start path)."""
        return self._host.config.call_timeout if self._host is not None else 60.0

    def catalog_now(self) -> Catalog | None:
        """The catalog if it is built (the hot path of tools/call avoids awaiting)."""
        return self._catalog

    # -- host events ---------------------------------------------------------------
    def _on_event(self, event: HostEvent) -> None:
        if event.kind == "tools_changed":
            self._catalog = None
            if self.options.start_workers and self._host is not None:
                # A plugin installed while serving starts now too, not on its first call.
                self._host.start_workers()
            for s in list(self.sessions):
                s.tools_changed()
                # A plugin's change, or the operator's renaming (host.RENAMED: prompts
                # follow ``expose``); not a composition's. (The literal keeps the host
                # module off the stdio start path.)
                if event.plugin or event.message == "renamed":
                    s.features_changed()
        elif event.kind == "resource_updated":
            for s in list(self.sessions):
                s.resource_updated(event.message)
        elif event.kind == "log" and event.call_id == 0 and self.options.forward_plugin_logs:
            # A call's own lines reach its session through the call; see the module doc.
            level = event.level if event.level in LOG_LEVELS else "info"
            for s in list(self.sessions):
                s.plugin_log(event.plugin, level, event.message)

    def initialize_result(self, version: str) -> dict[str, Any]:
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": dict(CAPABILITIES),
            "serverInfo": dict(self.server_info),
        }
        if self.options.instructions:
            result["instructions"] = self.options.instructions
        return result

    def discover_result(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "supportedVersions": list(MODERN_VERSIONS),
            "capabilities": {**CAPABILITIES, "resources": {"listChanged": True}},
            "ttlMs": self.options.tools_ttl_ms,
            "cacheScope": "private",
            "resultType": "complete",
            "_meta": {"io.modelcontextprotocol/serverInfo": dict(self.server_info)},
        }
        if self.options.instructions:
            result["instructions"] = self.options.instructions
        return result
