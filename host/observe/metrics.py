"""One host's metrics: its calls, workers and registry swaps, as plain structures.

Workers and swaps are counted from the host's events (:class:`HostEvent`), the edge
where they already surface; calls are counted by :meth:`HostMetrics.route`'s cached
:class:`RouteStats`. The Prometheus side (:mod:`.export`) reads all of it at scrape time.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .calls import PluginCalls, RouteStats, plugin_snapshot
from .frontend import FrontEndMetrics

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from ..compose.served import CompositionStats
    from ..host import Host, HostEvent

__all__ = ["EVENTS", "HostMetrics", "crash_reason"]

#: How many recent swaps and crashes a host remembers.
EVENTS = 64

_CRASH_REASONS = (
    ("over its limit", "limit"),
    ("signal", "signal"),
    ("ping", "hung"),
    ("hung", "hung"),
    ("wire protocol", "protocol"),
    ("handshake", "handshake"),
    ("exit", "exit"),
)


def crash_reason(message: str) -> str:
    """A worker's free-text end reason as one of a few label values: hung, limit,
    protocol, handshake, signal, exit or other."""
    low = message.lower()
    for word, reason in _CRASH_REASONS:
        if word in low:
            return reason
    return "other"


class HostMetrics:
    """Everything one :class:`~mcphost.host.Host` counts (never shared between hosts)."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self.routes: dict[str, RouteStats] = {}
        self.plugins: dict[str, PluginCalls] = {}
        #: (plugin,) -> worker starts; (plugin, reason) -> crashes and restarts.
        self.starts: dict[str, int] = {}
        self.crashes: dict[tuple[str, str], int] = {}
        self.restarts: dict[tuple[str, str], int] = {}
        self.swaps: dict[str, int] = {}
        self.rollbacks: dict[str, int] = {}
        self.swap_failures: dict[str, int] = {}
        self.swap_seconds: list[float] = []
        self.verification_failures: dict[str, int] = {}
        self.frontend: FrontEndMetrics | None = None
        #: Runs of compositions (set when the host serves its first composition).
        self.compositions: CompositionStats | None = None
        #: The recent swaps, rollbacks, crashes and replacements, oldest first (for
        #: ``status`` and the page): time, kind, plugin, version, detail.
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS)
        #: Streams' counts per tool (a ``mcphost.host.flow.StreamMetrics``), once the
        #: host runs a stream.
        self.streams: Any = None
        #: plugin -> why its last worker ended, until the next start counts a restart.
        self._pending_restart: dict[str, str] = {}
        self._registry: CollectorRegistry | None = None
        #: Label text of each tool's samples, kept by the text exporter between scrapes.
        self.text_cache: dict[str, tuple[str, list[str], str, str]] = {}
        self._host: Host | None = None

    # -- calls (the hot path) --------------------------------------------------------
    def route(self, name: str, plugin: str) -> RouteStats:
        """The stats of tool ``name`` of ``plugin``, made on first use and cached."""
        stats = self.routes.get(name)
        if stats is None:
            pc = self.plugins.get(plugin)
            if pc is None:
                pc = self.plugins[plugin] = PluginCalls(plugin)
            stats = self.routes[name] = RouteStats(name, pc)
            pc.routes.append(stats)
        return stats

    # -- workers and registry (from the host's events) -------------------------------
    def on_event(self, event: HostEvent) -> None:
        kind, plugin = event.kind, event.plugin
        if kind == "plugin_started":
            self.starts[plugin] = self.starts.get(plugin, 0) + 1
            why = self._pending_restart.pop(plugin, None)
            if why is not None:
                key = (plugin, why)
                self.restarts[key] = self.restarts.get(key, 0) + 1
        elif kind == "plugin_crashed":
            key = (plugin, crash_reason(event.message))
            self.crashes[key] = self.crashes.get(key, 0) + 1
            self._pending_restart[plugin] = key[1]
            self._remember("crash", event, event.message)
        elif kind == "plugin_replaced":
            self._pending_restart[plugin] = "replaced"
            self._remember("replaced", event, event.message)
        elif kind == "plugin_swapped":
            self.swaps[plugin] = self.swaps.get(plugin, 0) + 1
            back = _older(event.version, event.message)
            if back:
                self.rollbacks[plugin] = self.rollbacks.get(plugin, 0) + 1
            self._remember("rollback" if back else "swap", event, f"from {event.message}")

    def _remember(self, kind: str, event: HostEvent, detail: str) -> None:
        self.events.append(
            {
                "time": round(time.time(), 3),
                "kind": kind,
                "plugin": event.plugin,
                "version": event.version,
                "detail": detail,
            }
        )

    def swapped(self, plugin: str, seconds: float, ok: bool) -> None:
        """A swap (start of the new version, switch, drain of the old) took ``seconds``."""
        self.swap_seconds.append(seconds)
        if len(self.swap_seconds) > 4096:
            del self.swap_seconds[:2048]
        if not ok:
            self.swap_failures[plugin] = self.swap_failures.get(plugin, 0) + 1
            self.events.append(
                {
                    "time": round(time.time(), 3),
                    "kind": "swap_failed",
                    "plugin": plugin,
                    "version": "",
                    "detail": f"after {seconds:.3f} s",
                }
            )

    def counting_verifier(
        self, verify: Callable[[Any], Awaitable[None]]
    ) -> Callable[[Any], Awaitable[None]]:
        """``verify`` that also counts its refusals by plugin."""

        async def counted(source: Any) -> None:
            try:
                await verify(source)
            except Exception:
                name = getattr(source, "name", "")
                self.verification_failures[name] = self.verification_failures.get(name, 0) + 1
                raise

        return counted

    # -- readers ---------------------------------------------------------------------
    def snapshot(self, window: float = 10.0) -> dict[str, Any]:
        """Plain data for ``status`` and pages: per plugin its calls in flight, totals,
        errors by code, calls/s and p50/p99 (ms) over the last ``window`` seconds."""
        return {
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "plugins": {
                name: plugin_snapshot(pc, window) for name, pc in list(self.plugins.items())
            },
            "clients": None if self.frontend is None else self.frontend.open_sessions(),
        }

    def bind(self, host: Host) -> None:
        """The host whose workers' state and resource use are read at scrape time."""
        self._host = host

    def registry(self) -> CollectorRegistry:
        """This host's own Prometheus registry (made on first use: imports the client)."""
        if self._registry is None:
            from prometheus_client.registry import CollectorRegistry

            from .export import HostCollector

            reg = CollectorRegistry(auto_describe=False)
            reg.register(HostCollector(self, lambda: self._host))
            self._registry = reg
        return self._registry


def _older(new: str, old: str) -> bool:
    """Whether ``new`` is a lower version than ``old`` (a swap back is a rollback)."""
    if not old or not new:
        return False
    try:
        from packaging.version import Version

        return Version(new) < Version(old)
    except Exception:
        return False
