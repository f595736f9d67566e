"""The :class:`Context` a tool receives: logging, progress, cancellation, a data dir."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

from .errors import CallCancelled

__all__ = ["Context", "ContextSink"]

LEVELS = ("debug", "info", "warning", "error")


class ContextSink(Protocol):
    """Where a context's logs and progress go: the worker's channel, or a test's list."""

    def emit_log(self, call_id: int, level: str, message: str) -> None: ...

    def emit_progress(
        self, call_id: int, progress: float, total: float | None, message: str | None
    ) -> None: ...


class Context:
    """Per-call services for a tool; declare a parameter annotated ``Context`` to get one.

    Every method is safe to call from sync tools (which run on worker threads) and from
    async tools alike.
    """

    def __init__(
        self,
        *,
        call_id: int,
        plugin: str,
        tool: str,
        data_dir: Path,
        sink: ContextSink,
        deadline: float | None = None,
        traceparent: str = "",
    ) -> None:
        self.call_id = call_id
        self.plugin = plugin
        self.tool = tool
        #: A directory private to this plugin that survives worker restarts.
        self.data_dir = data_dir
        #: ``time.monotonic()`` value after which the host gives up on the call.
        self.deadline = deadline
        #: How long a sync tool's function itself ran (set by the runner).
        self.run_seconds = 0.0
        #: The W3C ``traceparent`` of the host's span for this call ("" when the host
        #: is not tracing). Where OpenTelemetry is installed the worker already makes it
        #: the current context while the tool runs; this is for anything else.
        self.traceparent = traceparent
        self._sink = sink
        # A plain flag: set by the worker's loop, read by the tool's thread; the GIL
        # makes both safe, and a call that is never cancelled pays for no Event.
        self._cancelled = False

    # -- logging -------------------------------------------------------------------
    def log(self, level: str, message: str) -> None:
        """Send a log line to the host (levels: debug, info, warning, error)."""
        if level not in LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
        self._sink.emit_log(self.call_id, level, str(message))

    def debug(self, message: str) -> None:
        self.log("debug", message)

    def info(self, message: str) -> None:
        self.log("info", message)

    def warning(self, message: str) -> None:
        self.log("warning", message)

    def error(self, message: str) -> None:
        self.log("error", message)

    # -- progress ------------------------------------------------------------------
    def progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Report how far the call has come (MCP clients see a progress notification)."""
        self._sink.emit_progress(self.call_id, float(progress), total, message)

    # -- cancellation --------------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        """True once the caller cancelled the call or its deadline passed."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            return True
        return self._cancelled

    def check_cancelled(self) -> None:
        """Raise :class:`CallCancelled` if the call was cancelled; for long sync loops."""
        if self.cancelled:
            raise CallCancelled(f"{self.plugin}.{self.tool}: call {self.call_id} was cancelled")

    def time_remaining(self) -> float | None:
        """Seconds until the deadline, or None when the call has none."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    # -- notifications -------------------------------------------------------------
    def notify_resource_updated(self, uri: str) -> None:
        """Tell the clients subscribed to resource ``uri`` (one of this plugin's) that
        it changed; they get ``notifications/resources/updated`` and may read it again."""
        notify = getattr(self._sink, "emit_notify", None)
        if notify is not None:
            notify("resource_updated", str(uri))

    def _cancel(self) -> None:
        self._cancelled = True
