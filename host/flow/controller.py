"""The flow controller of one host: admits streams, runs each under its watermarks and
limits, counts what they do, and shows the running and waiting ones.

``Host.stream`` hands every stream here (front end -> Host.stream -> :class:`Flow` ->
pool -> WorkerClient -> worker). Settings are read from ``streaming`` of the host's
configuration when a stream asks for admission, so a changed setting applies to the
streams admitted after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from mcphost.sdk.errors import Busy, InvalidArguments, MCPHostError

from ..config import HostConfig
from .admission import Admission, AdmissionLimits
from .limits import StreamLimits, limit_error, stream_limits
from .metrics import StreamMetrics, ToolStreams
from .watermarks import Watermarks

if TYPE_CHECKING:
    from mcphost.sandbox.client import CallLogCallback, ProgressCallback, WorkerClient

__all__ = ["ActiveStream", "Flow", "checked_priority"]
#: Shortest wait between two looks at a stream's time limits.
MIN_CHECK = 0.005


def checked_priority(priority: object) -> int:
    """A caller's priority: a whole number from 0 (the highest) to 100."""
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 100:
        raise InvalidArguments(
            f"priority must be a whole number from 0 to 100 (0 is admitted first, as for "
            f"batch calls), got {priority!r}"
        )
    return priority


class ActiveStream:
    """One admitted stream: what :meth:`Flow.snapshot` shows of it, and its timers."""

    def __init__(
        self,
        tool: str,
        plugin: str,
        priority: int,
        limits: StreamLimits,
        marks: Watermarks,
        stats: ToolStreams | None,
    ) -> None:
        self.tool = tool
        self.plugin = plugin
        self.priority = priority
        self.limits = limits
        self.marks = marks
        self.stats = stats
        self.started = time.monotonic()
        self.items = 0
        self.bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self.ended = False

    # -- time limits -----------------------------------------------------------------
    def watch(self) -> None:
        """Look at the time limits when the first of them could be passed."""
        lim = self.limits
        if lim.max_duration is None and lim.idle_timeout is None and not self._slow_cancels():
            return
        self._schedule(time.monotonic())

    def _slow_cancels(self) -> bool:
        lim = self.limits
        return lim.slow_consumer_timeout is not None and lim.slow_consumer_policy == "cancel"

    def _schedule(self, now: float) -> None:
        lim, m = self.limits, self.marks
        due: list[float] = []
        if lim.max_duration is not None:
            due.append(self.started + lim.max_duration)
        if lim.idle_timeout is not None:
            due.append((now if m.paused else m.last_active) + lim.idle_timeout)
        if self._slow_cancels() and lim.slow_consumer_timeout is not None:
            due.append((m.last_taken if m.full else now) + lim.slow_consumer_timeout)
        at = max(min(due), now + MIN_CHECK)
        self._timer = asyncio.get_running_loop().call_later(at - now, self._check)

    def _check(self) -> None:
        self._timer = None
        if self.ended:
            return
        now = time.monotonic()
        lim, m = self.limits, self.marks
        if lim.max_duration is not None and now - self.started >= lim.max_duration:
            self._abort("max_duration", lim.max_duration, f"it ran {now - self.started:.2f}s")
            return
        if (
            lim.idle_timeout is not None
            and not m.paused
            and now - m.last_active >= lim.idle_timeout
        ):
            self._abort(
                "idle_timeout",
                lim.idle_timeout,
                f"no item for {now - m.last_active:.2f}s",
            )
            return
        if (
            self._slow_cancels()
            and lim.slow_consumer_timeout is not None
            and m.full
            and now - m.last_taken >= lim.slow_consumer_timeout
        ):
            self._abort(
                "slow_consumer_timeout",
                lim.slow_consumer_timeout,
                f"the consumer took no item for {now - m.last_taken:.2f}s while the "
                "producer waited (slow_consumer_policy = cancel)",
            )
            return
        self._schedule(now)

    def _abort(self, limit: str, value: float, what: str) -> None:
        fail = self.marks.fail
        if fail is not None:
            fail(limit_error(self.tool, limit, value, self.items, what))

    def stop(self) -> None:
        self.ended = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "plugin": self.plugin,
            "priority": self.priority,
            "age": round(now - self.started, 3),
            "items": self.items,
            "bytes": self.bytes,
            "buffered": self.marks.buffered,
            "state": (
                "suspended" if self.marks.suspended else "paused" if self.marks.full else "flowing"
            ),
        }


class Flow:
    """Admission, watermarks, limits and stream metrics of one host."""

    def __init__(
        self, config: Callable[[], HostConfig], metrics: StreamMetrics | None = None
    ) -> None:
        self._config = config
        self.metrics = metrics
        self.admission = Admission(self._admission_limits)
        self.active: set[ActiveStream] = set()

    def _admission_limits(self) -> AdmissionLimits:
        s = self._config().streaming
        return AdmissionLimits(
            s.max_concurrent,
            s.max_concurrent_per_plugin,
            s.admission_timeout,
            s.aging_seconds,
            s.preempt,
        )

    def priority_for(self, name: str, asked: object = None) -> int:
        """The caller's priority, else the tool's configured one, else the default."""
        if asked is not None:
            return checked_priority(asked)
        return self._config().streaming.priority_of(name)

    async def stream(
        self,
        name: str,
        plugin: str,
        acquire: Callable[[], Awaitable[WorkerClient]],
        tool: str,
        args: dict[str, Any],
        *,
        priority: object = None,
        limits: dict[str, Any] | None = None,
        window: int | None = None,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_log: CallLogCallback | None = None,
        traceparent: str = "",
        on_start: Callable[[Watermarks], None] | None = None,
    ) -> AsyncGenerator[Any, None]:
        """Admit the stream of tool ``name`` and yield its items under flow control.

        ``on_start`` receives the stream's :class:`Watermarks` once it is admitted, for
        a front end that holds items for a slow client (``hold``/``release``)."""
        config = self._config()
        s = config.streaming
        prio = self.priority_for(name, priority)
        lim = stream_limits(s, limits)
        stats = None if self.metrics is None else self.metrics.tool(name, plugin)
        try:
            ticket = await self.admission.admit(plugin, name, prio)
        except Busy:
            if stats is not None:
                stats.rejected["busy"] = stats.rejected.get("busy", 0) + 1
            raise
        except asyncio.CancelledError:
            if stats is not None:
                stats.rejected["cancelled"] = stats.rejected.get("cancelled", 0) + 1
            raise
        marks = Watermarks(s.high_watermark, s.low_watermark)
        ticket.suspend, ticket.resume = marks.suspend, marks.unsuspend
        active = ActiveStream(name, plugin, prio, lim, marks, stats)
        self.active.add(active)
        if stats is not None:
            stats.admitted += 1
        outcome = "cancelled"
        n = nbytes = 0
        try:
            if on_start is not None:
                on_start(marks)
            worker = await acquire()
            items = worker.gated_stream(
                tool,
                args,
                marks,
                window=window or s.window_items or config.stream_window,
                window_bytes=s.window_bytes,
                timeout=timeout,
                on_progress=on_progress,
                on_log=on_log,
                traceparent=traceparent,
            )
            max_items = lim.max_items
            max_bytes = lim.max_bytes
            max_item_bytes = lim.max_item_bytes
            # Closed here and now when the consumer leaves, not when collected.
            async with contextlib.aclosing(items):
                active.watch()
                async for item in items:
                    size = marks.last_size
                    if max_items is not None and n >= max_items:
                        raise limit_error(name, "max_items", max_items, n, "the producer had more")
                    if max_item_bytes is not None and size > max_item_bytes:
                        raise limit_error(
                            name, "max_item_bytes", max_item_bytes, n, f"item {n} is {size} bytes"
                        )
                    if max_bytes is not None and nbytes + size > max_bytes:
                        raise limit_error(
                            name,
                            "max_bytes",
                            max_bytes,
                            n,
                            f"item {n} would make {nbytes + size} bytes",
                        )
                    n += 1
                    nbytes += size
                    active.items = n
                    active.bytes = nbytes
                    if n == 1 and stats is not None:
                        stats.first_item(time.monotonic() - active.started)
                    yield item
            outcome = "ok"
        except MCPHostError as exc:
            # What the consumer got (a limit found by a timer counted fewer: the items
            # buffered then were still delivered before it).
            exc.data["delivered"] = n
            outcome = str(exc.data["limit"]) if exc.code == "stream_limit" else exc.code
            raise
        finally:
            active.stop()
            self.active.discard(active)
            self.admission.release(ticket)
            if stats is not None:
                stats.ended(
                    time.monotonic() - active.started,
                    n,
                    nbytes,
                    marks.pauses,
                    marks.paused_for(),
                )
                stats.suspensions += ticket.suspensions
                if outcome == "ok":
                    stats.completed += 1
                elif outcome == "cancelled":
                    stats.cancelled += 1
                else:
                    stats.failed[outcome] = stats.failed.get(outcome, 0) + 1

    # -- what runs and what waits ----------------------------------------------------
    def snapshot(self) -> list[dict[str, Any]]:
        """Active streams (state ``flowing`` or ``paused``) then the admission queue
        (state ``queued``, in admission order): tool, plugin, priority, age in seconds,
        and for active ones items, bytes delivered and bytes buffered. Plain data for a
        status display."""
        now = time.monotonic()
        running = sorted(self.active, key=lambda a: a.started)
        return [a.snapshot(now) for a in running] + self.admission.snapshot()
