"""What streams do, counted per tool in plain structures (read by the ``streams``
family of :mod:`mcphost.host.observe.export` at scrape time)."""

from __future__ import annotations

from bisect import bisect_left

from ..observe.calls import BUCKETS

__all__ = ["StreamMetrics", "ToolStreams"]


class ToolStreams:
    """The counts of one tool's streams."""

    __slots__ = (
        "admitted",
        "bytes",
        "cancelled",
        "completed",
        "duration_buckets",
        "duration_sum",
        "failed",
        "first_item_buckets",
        "first_item_sum",
        "items",
        "paused_seconds",
        "pauses",
        "plugin",
        "rejected",
        "suspensions",
        "tool",
    )

    def __init__(self, tool: str, plugin: str) -> None:
        self.tool = tool
        self.plugin = plugin
        self.admitted = 0
        #: reason -> streams refused admission (busy, cancelled while queued, ...).
        self.rejected: dict[str, int] = {}
        self.completed = 0
        #: reason (the limit passed, or the error's code) -> streams that ended in error.
        self.failed: dict[str, int] = {}
        #: Streams whose consumer went away before the end (their producer cancelled).
        self.cancelled = 0
        self.pauses = 0
        self.paused_seconds = 0.0
        #: Times a stream gave its place to one of a higher priority (streams ended).
        self.suspensions = 0
        self.items = 0
        self.bytes = 0
        self.first_item_buckets = [0] * (len(BUCKETS) + 1)
        self.first_item_sum = 0.0
        self.duration_buckets = [0] * (len(BUCKETS) + 1)
        self.duration_sum = 0.0

    def first_item(self, seconds: float) -> None:
        self.first_item_buckets[bisect_left(BUCKETS, seconds)] += 1
        self.first_item_sum += seconds

    def ended(self, seconds: float, items: int, nbytes: int, pauses: int, paused: float) -> None:
        self.duration_buckets[bisect_left(BUCKETS, seconds)] += 1
        self.duration_sum += seconds
        self.items += items
        self.bytes += nbytes
        self.pauses += pauses
        self.paused_seconds += paused


class StreamMetrics:
    """Every tool's stream counts on one host."""

    def __init__(self) -> None:
        self.tools: dict[str, ToolStreams] = {}

    def tool(self, name: str, plugin: str) -> ToolStreams:
        t = self.tools.get(name)
        if t is None:
            t = self.tools[name] = ToolStreams(name, plugin)
        return t
