"""A worker's stdout and stderr, folded into a bounded number of log records.

Whatever a plugin prints goes to the host log (and, if the operator asks, to MCP
clients), one record per line. A plugin that prints without pause must not turn into a
flood of records: lines pass through a token bucket per worker (lines and bytes per
second, with a burst); what does not fit is counted, and the count goes out as one
record, "plugin X wrote N more lines (M bytes) to stdout; dropped", at most once a
second while the flood lasts and once more when it ends. Each line is cut to
:data:`MAX_LINE_BYTES`. The pipes are always read to the end, so a printing plugin is
never blocked by the host, and the host holds at most one line per stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

__all__ = [
    "MAX_LINE_BYTES",
    "OUTPUT_BURST_LINES",
    "OUTPUT_BYTES_PER_SECOND",
    "OUTPUT_LINES_PER_SECOND",
    "OutputBudget",
    "pump_output",
]

log = logging.getLogger("mcphost.worker")

#: The longest line forwarded; the rest of a longer line is counted, not kept.
MAX_LINE_BYTES = 4096
#: Lines a worker may print per second, over both streams, once its burst is spent.
OUTPUT_LINES_PER_SECOND = 50.0
#: Lines a worker may print at once before the per-second rate applies.
OUTPUT_BURST_LINES = 200.0
#: Bytes per second, likewise (the burst is four seconds' worth).
OUTPUT_BYTES_PER_SECOND = 64.0 * 1024
#: How often, at most, one "dropped" record goes out while a flood lasts (seconds).
SUMMARY_INTERVAL = 1.0

#: plugin, level, message, call id (always 0 here: output belongs to no call).
LogSink = Callable[[str, str, str, int], None]


class OutputBudget:
    """A token bucket of lines and bytes per second, shared by a worker's two streams."""

    def __init__(
        self,
        lines_per_second: float = OUTPUT_LINES_PER_SECOND,
        burst_lines: float = OUTPUT_BURST_LINES,
        bytes_per_second: float = OUTPUT_BYTES_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lines_per_second = lines_per_second
        self.burst_lines = burst_lines
        self.bytes_per_second = bytes_per_second
        self.burst_bytes = 4 * bytes_per_second
        self._lines = burst_lines
        self._bytes = self.burst_bytes
        self._clock = clock
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed, self._at = now - self._at, now
        self._lines = min(self.burst_lines, self._lines + elapsed * self.lines_per_second)
        self._bytes = min(self.burst_bytes, self._bytes + elapsed * self.bytes_per_second)

    def ready(self) -> bool:
        """Whether at least one more line may go out now."""
        self._refill()
        return self._lines >= 1

    def take(self, size: int) -> bool:
        """Spend one line of ``size`` bytes if the bucket holds it."""
        self._refill()
        if self._lines < 1 or self._bytes < size:
            return False
        self._lines -= 1
        self._bytes -= size
        return True


class _Folder:
    """One stream's lines: forwarded while the budget lasts, counted once it is spent."""

    def __init__(self, plugin: str, name: str, sink: LogSink | None, budget: OutputBudget) -> None:
        self.plugin = plugin
        self.name = name
        self.level = "info" if name == "stdout" else "warning"
        self.sink = sink
        self.budget = budget
        self.dropped_lines = 0
        self.dropped_bytes = 0
        self.summary_due = 0.0

    def emit(self, text: str) -> None:
        if self.sink is not None:
            self.sink(self.plugin, self.level, text, 0)
        else:
            log.info("[%s %s] %s", self.plugin, self.name, text)

    def line(self, raw: bytes, size: int) -> None:
        """A complete line: ``raw`` is its kept head, ``size`` its full length."""
        if self.budget.take(min(size, MAX_LINE_BYTES)):
            if self.summary_due and time.monotonic() >= self.summary_due:
                self.flush()
            self.emit(raw[:MAX_LINE_BYTES].decode("utf-8", "replace").rstrip())
        else:
            self.drop(1, size)

    def drop(self, lines: int, size: int) -> None:
        """Count lines that did not fit; say so once the summary interval has passed."""
        self.dropped_lines += lines
        self.dropped_bytes += size
        if not self.summary_due:
            self.summary_due = time.monotonic() + SUMMARY_INTERVAL
        elif time.monotonic() >= self.summary_due:
            self.flush()

    def flush(self) -> None:
        """Send the count of dropped lines, if any."""
        if self.dropped_lines:
            self.emit(
                f"plugin {self.plugin} wrote {self.dropped_lines} more lines "
                f"({self.dropped_bytes} bytes) to {self.name}; dropped"
            )
        self.dropped_lines = self.dropped_bytes = 0
        self.summary_due = 0.0


async def pump_output(
    stream: asyncio.StreamReader | None,
    plugin: str,
    name: str,
    on_log: LogSink | None,
    budget: OutputBudget,
) -> None:
    """Read a worker's stdout or stderr to its end, folding lines into bounded records."""
    if stream is None:
        return
    folder = _Folder(plugin, name, on_log, budget)
    head = bytearray()  # the start of the current line, at most MAX_LINE_BYTES
    size = 0  # the current line's full length so far
    while True:
        if folder.summary_due:
            wait = max(0.0, folder.summary_due - time.monotonic())
            try:
                chunk = await asyncio.wait_for(stream.read(64 * 1024), wait)
            except TimeoutError:
                folder.flush()
                continue
        else:
            chunk = await stream.read(64 * 1024)
        if not chunk:
            if size:
                folder.line(bytes(head), size)
            folder.flush()
            return
        start = 0
        if folder.dropped_lines and not budget.ready():
            # Mid-flood with nothing to spend: count this chunk's lines in one go.
            last = chunk.rfind(b"\n")
            if last >= 0:
                n = chunk.count(b"\n", 0, last + 1)
                folder.drop(n, size + last + 1 - n)
                head.clear()
                size = 0
                start = last + 1
        while True:
            nl = chunk.find(b"\n", start)
            end = len(chunk) if nl < 0 else nl
            if len(head) < MAX_LINE_BYTES:
                head += chunk[start : min(end, start + MAX_LINE_BYTES - len(head))]
            size += end - start
            if nl < 0:
                break
            folder.line(bytes(head), size)
            head.clear()
            size = 0
            start = nl + 1
