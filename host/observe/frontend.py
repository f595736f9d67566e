"""The MCP front end's counts: requests by method and outcome, their durations, bytes
in and out, and inputs refused before they became a request."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable

from .calls import BUCKETS

__all__ = ["METHODS", "FrontEndMetrics", "RequestStats"]

#: The methods counted under their own name (``mcp.method.name``); any other method a
#: client sends is counted as "other", so a client cannot grow the label set.
METHODS = frozenset(
    {
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "logging/setLevel",
        "server/discover",
        "subscriptions/listen",
        "other",
    }
)
_now = time.perf_counter


class RequestStats:
    """Requests of one method: count by outcome, a duration histogram."""

    __slots__ = ("buckets", "method", "outcomes", "sum")

    def __init__(self, method: str) -> None:
        self.method = method
        #: "ok" or the JSON-RPC error code (as text) -> requests.
        self.outcomes: dict[str, int] = {}
        self.sum = 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)

    def end(self, t0: float, outcome: str) -> None:
        d = _now() - t0
        o = self.outcomes
        o[outcome] = o.get(outcome, 0) + 1
        self.sum += d
        self.buckets[bisect_left(BUCKETS, d)] += 1


class FrontEndMetrics:
    """Counted by the MCP server's sessions and transports (plain ints and dicts)."""

    def __init__(self, transport: str = "stdio") -> None:
        self.transport = transport
        self.methods: dict[str, RequestStats] = {}
        self.bytes_in = 0
        self.bytes_out = 0
        #: Reason ("parse_error", "too_large", "invalid_request", ...) -> inputs refused.
        self.rejected: dict[str, int] = {}
        #: Sessions ever opened; the open ones are counted by ``open_sessions()``.
        self.sessions_opened = 0
        self.open_sessions: Callable[[], int] = lambda: 0

    def request(self, method: str) -> RequestStats:
        """The stats of ``method`` (made on first use); call ``end`` on them after."""
        stats = self.methods.get(method)
        if stats is None:
            if method not in METHODS:
                return self.request("other")
            stats = self.methods[method] = RequestStats(method)
        return stats

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
