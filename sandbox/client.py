"""The host's side of one worker: spawn it, handshake, multiplex calls and streams.

A :class:`WorkerClient` owns one worker process. Many calls run at once over its
channel, matched by id. When the worker dies every call in flight fails with
:class:`~mcphost.sdk.errors.WorkerCrashed` naming the plugin and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import signal
import socket
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Protocol

from mcphost.sdk.errors import (
    AskFailed,
    BatchResults,
    HandshakeRefused,
    MCPHostError,
    PluginError,
    ProtocolError,
    ToolTimeout,
    WorkerCrashed,
    error_from_code,
)
from mcphost.sdk.features import features_problem
from mcphost.sdk.tool_rules import tools_problem

from .asking import current_asker, no_handler
from .channel import Channel, open_channel
from .deadlines import Deadlines
from .isolation import IsolationBackend, LaunchPlan, WorkerSpec
from .output import OutputBudget, pump_output
from .protocol import (
    Answer,
    Ask,
    Call,
    Cancel,
    Credit,
    Error,
    Frame,
    FrameCodec,
    Hello,
    Items,
    Log,
    Notify,
    Ping,
    Pong,
    Progress,
    Result,
    Shutdown,
    StreamEnd,
    StreamItem,
    Welcome,
    item_size,
    negotiate,
)
from .settle import in_thread, wait_out
from .spawn import WorkerProcess, start_process

__all__ = [
    "CallLogCallback",
    "LogCallback",
    "ProgressCallback",
    "StreamGate",
    "WorkerClient",
    "complete_handshake",
    "describe_exit",
    "spawn_worker",
]


#: Call (and ping) ids, unique within the process.
_CALL_IDS = itertools.count(1)
log = logging.getLogger("mcphost.worker")

ProgressCallback = Callable[[float, float | None, str | None], None]
LogCallback = Callable[[str, str, str, int], None]  # plugin, level, message, call id
#: Where one call's own log lines go: level, message.
CallLogCallback = Callable[[str, str], None]
NotifyCallback = Callable[[str, str, str], None]  # plugin, kind, uri

#: Extra seconds the host waits past a call's own timeout before it gives up on the worker.
DEADLINE_GRACE = 2.0
#: Seconds a worker whose channel closed has to exit on its own before the host kills it.
CHANNEL_CLOSE_GRACE = 2.0
_END = object()


class _Inbox:
    """A stream's items received and not yet read: a deque and at most one waiter.

    Cheaper per item than an :class:`asyncio.Queue`: a put appends, and wakes the
    reader only when it is waiting; the reader takes every item already there
    without a wait between them."""

    __slots__ = ("_loop", "_waiter", "items")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.items: deque[Any] = deque()
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self.items.append(item)
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def put_many(self, items: list[Any]) -> None:
        """Several items at once (an Items frame's): one wake-up for all of them."""
        self.items.extend(items)
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    async def wait(self) -> None:
        """Until an item is there (returns at once when one is)."""
        while not self.items:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class StreamGate(Protocol):
    """The flow control of one stream, on the host's side (mcphost.host.flow gives one).

    With a gate the host credits items as they arrive (in items and in bytes, half a
    window at a time) while the gate is not ``paused``; the gate pauses when the bytes
    buffered toward the consumer pass its high watermark, and calls ``resume()`` (set by
    the client) when they fall to its low one. ``fail(exc)`` (set by the client) ends the
    stream: the items already received are read first, then ``exc``; the worker is told
    to cancel."""

    paused: bool
    resume: Callable[[], None] | None
    fail: Callable[[BaseException], None] | None

    def arrived(self, size: int) -> None:
        """An item of ``size`` bytes was received and waits for the consumer."""

    def taken(self, size: int) -> None:
        """The consumer took an item of ``size`` bytes."""


class _Pending:
    __slots__ = (
        "asker",
        "asking",
        "future",
        "gate",
        "granted",
        "granted_bytes",
        "items",
        "on_log",
        "on_progress",
        "owed",
        "owed_bytes",
        "queue",
        "received",
        "received_bytes",
        "refill",
        "refill_bytes",
        "sizes",
        "timeout",
        "tool",
        "traceparent",
    )

    def __init__(
        self,
        future: asyncio.Future[Any] | None,
        queue: _Inbox | None,
        on_progress: ProgressCallback | None,
        granted: int = 0,
        tool: str = "",
        timeout: float | None = None,
        on_log: CallLogCallback | None = None,
        traceparent: str = "",
        items: bool = False,
    ) -> None:
        self.future = future
        #: The caller takes a batch's failed items as BatchResults (else: the first
        #: failed item's error fails the call).
        self.items = items
        self.queue = queue
        self.on_progress = on_progress
        self.on_log = on_log
        self.received = 0
        self.granted = granted
        self.tool = tool
        self.timeout = timeout
        self.traceparent = traceparent
        # Flow control with a gate: bytes of credit, credit owed for items received.
        self.gate: StreamGate | None = None
        self.granted_bytes = 0
        self.received_bytes = 0
        self.owed = 0
        self.owed_bytes = 0
        self.refill = 1
        self.refill_bytes = 0
        self.sizes: deque[int] | None = None
        #: Who answers the call's questions to its client (see .asking), and the
        #: tasks answering them now (cancelled when the call ends).
        self.asker = current_asker.get()
        self.asking: set[asyncio.Task[None]] | None = None

    def stop_asking(self) -> None:
        if self.asking:
            for task in self.asking:
                task.cancel()


def describe_exit(returncode: int) -> str:
    """How a worker process ended, in words: negative codes are the signal that killed it."""
    if returncode >= 0:
        return "exited" if returncode == 0 else f"exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = str(-returncode)
    hint = {
        "SIGXCPU": " (it used up its CPU-time limit)",
        "SIGKILL": " (killed: out of memory, or by an operator)",
        "SIGSEGV": " (a crash in native code)",
    }.get(name, "")
    return f"exited on signal {name}{hint}"


class WorkerClient:
    """One running worker process and the calls in flight on it."""

    def __init__(
        self,
        spec: WorkerSpec,
        proc: WorkerProcess,
        plan: LaunchPlan,
        on_log: LogCallback | None,
    ) -> None:
        self.spec = spec
        self.proc = proc
        self.plan = plan
        self.pid = proc.pid
        self.hello: Hello | None = None
        self.version = 0
        self.started_at = time.monotonic()
        self.channel: Channel | None = None
        self._on_log = on_log
        # One count for every worker of the process: a call id names one call even
        # among the replicas of a pool (a log line finds its call by id alone).
        self._ids = _CALL_IDS
        self._pending: dict[int, _Pending] = {}
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._loop = asyncio.get_running_loop()
        self._deadlines = Deadlines(self._loop, self._pending, self._expire)
        self._hello: asyncio.Future[Hello] = self._loop.create_future()
        self.closed: asyncio.Future[str] = self._loop.create_future()
        #: Done once the jail is ended and the scratch directory removed (after ``closed``).
        self.released: asyncio.Future[None] = self._loop.create_future()
        self._kill_reason: str | None = None
        self._io_tasks: list[asyncio.Task[None]] = []
        self.calls_total = 0
        #: Pool threads stuck in calls already answered, as of the worker's last Pong.
        self.stuck = 0
        #: Receives the worker's Notify frames (plugin, kind, uri); None drops them.
        self.on_notify: NotifyCallback | None = None

    # -- state ---------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return not self.closed.done()

    @property
    def inflight(self) -> int:
        return len(self._pending)

    @property
    def label(self) -> str:
        return f"{self.spec.plugin} {self.spec.version} (pid {self.pid})"

    # -- frames from the worker ----------------------------------------------------
    def _on_frame(self, frame: Frame) -> None:
        if isinstance(frame, Result):
            p = self._pending.pop(frame.id, None)
            if p is not None and p.future is not None and not p.future.done():
                if not frame.errors:
                    p.future.set_result(frame.value)
                    return
                value = frame.value if isinstance(frame.value, list) else []
                results = BatchResults(
                    value, {e.index: (e.code, e.message, e.data) for e in frame.errors}
                )
                if p.items:
                    p.future.set_result(results)
                else:
                    p.future.set_exception(results.error(min(results.errors)))
        elif isinstance(frame, StreamItem):
            p = self._pending.get(frame.id)
            if p is not None and p.queue is not None:
                p.received += 1
                if p.received > p.granted:
                    self._protocol_violation(
                        f"sent item {p.received} of stream {frame.id} with only {p.granted} credits"
                    )
                    return
                if p.gate is not None:
                    self._gated_item(frame, p)
                    return
                p.queue.put_nowait(frame.value)
        elif isinstance(frame, Items):
            p = self._pending.get(frame.id)
            if p is not None and p.queue is not None:
                self._items(frame, p)
        elif isinstance(frame, StreamEnd):
            p = self._pending.pop(frame.id, None)
            if p is not None and p.queue is not None:
                p.queue.put_nowait(_END)
        elif isinstance(frame, Error):
            if frame.id == 0:
                # The worker failed before or outside any call: it is about to exit.
                self._kill_reason = f"{frame.message} [{frame.code}]"
                if not self._hello.done():
                    self._hello.set_exception(
                        error_from_code(frame.code, f"{self.spec.plugin}: {frame.message}")
                    )
                return
            p = self._pending.pop(frame.id, None)
            if p is not None:
                exc = error_from_code(frame.code, frame.message, frame.data)
                if p.future is not None and not p.future.done():
                    p.future.set_exception(exc)
                elif p.queue is not None:
                    p.queue.put_nowait(exc)
        elif isinstance(frame, Progress):
            p = self._pending.get(frame.id)
            if p is not None and p.on_progress is not None:
                try:
                    p.on_progress(frame.progress, frame.total, frame.message)
                except Exception:  # a caller's callback must not break the channel
                    log.exception("progress callback failed")
        elif isinstance(frame, Log):
            # A call's own lines go to its caller (when it asked for them) and to the host
            # log; lines outside any call (id 0) only to the host log.
            p = self._pending.get(frame.id) if frame.id else None
            if p is not None and p.on_log is not None:
                try:
                    p.on_log(frame.level, frame.message)
                except Exception:  # a caller's callback must not break the channel
                    log.exception("log callback failed")
            self._emit_log(frame.level, frame.message, frame.id)
        elif isinstance(frame, Pong):
            self.stuck = frame.stuck
            fut = self._pings.pop(frame.n, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif isinstance(frame, Ask):
            self._on_ask(frame)
        elif isinstance(frame, Hello):
            if not self._hello.done():
                self._hello.set_result(frame)
        elif isinstance(frame, Notify):
            if self.on_notify is not None:
                try:
                    self.on_notify(self.spec.plugin, frame.kind, frame.uri)
                except Exception:  # a listener must not break the channel
                    log.exception("notify callback failed")
        else:
            self._protocol_violation(
                f"sent a {type(frame).__name__} frame, which only a host sends"
            )

    def _on_ask(self, frame: Ask) -> None:
        """A call asks its client something: its asker answers on a task of its own
        (cancelled with the call); a call with none is answered an error at once."""
        p = self._pending.get(frame.id)
        if p is None:
            return  # the call is over: nobody waits for the answer
        if p.asker is None:
            exc = no_handler(
                frame.kind,
                f"the call to {self.spec.plugin}.{p.tool} came from no MCP client and "
                "the host has no handler",
            )
            self._send(Answer(id=frame.id, n=frame.n, code=exc.code, message=exc.message))
            return
        task = self._loop.create_task(self._answer(frame, p.asker))
        if p.asking is None:
            p.asking = set()
        p.asking.add(task)
        task.add_done_callback(p.asking.discard)

    async def _answer(self, frame: Ask, asker: Any) -> None:
        try:
            value = await asker(frame.kind, frame.params)
            answer = Answer(id=frame.id, n=frame.n, value=value)
        except MCPHostError as exc:
            answer = Answer(id=frame.id, n=frame.n, code=exc.code, message=exc.message)
        except Exception as exc:  # the client's or the handler's failure, for the tool
            answer = Answer(
                id=frame.id,
                n=frame.n,
                code=AskFailed.code,
                message=f"the {frame.kind} request failed: {exc}",
            )
        if frame.id in self._pending and self.alive:
            self._send(answer)

    def _items(self, frame: Items, p: _Pending) -> None:
        """An Items frame: checked, decoded and accounted once for all its items."""
        raws = frame.values
        n = len(raws)
        if frame.seq != p.received or not n:
            self._protocol_violation(
                f"sent items from {frame.seq} of stream {frame.id} where item {p.received} was due"
                if n
                else f"sent no items in a frame of stream {frame.id}"
            )
            return
        p.received += n
        if p.received > p.granted:
            self._protocol_violation(
                f"sent item {p.received} of stream {frame.id} with only {p.granted} credits"
            )
            return
        decode = self.channel.codec.decode_value  # type: ignore[union-attr]
        values = [decode(raw) for raw in raws]
        gate = p.gate
        if gate is None:
            p.queue.put_many(values)  # type: ignore[union-attr]
            return
        sizes = [item_size(raw) for raw in raws]
        total = sum(sizes)
        # Every item but the last must have been sent within the byte credit (the last
        # may pass it), as if each had come alone.
        if p.refill_bytes and p.received_bytes + total - sizes[-1] >= p.granted_bytes:
            self._protocol_violation(
                f"sent items up to {p.received} of stream {frame.id} past its byte credit "
                f"of {p.granted_bytes} bytes"
            )
            return
        p.received_bytes += total
        p.sizes.extend(sizes)  # type: ignore[union-attr]
        p.queue.put_many(values)  # type: ignore[union-attr]
        p.owed += n
        p.owed_bytes += total
        gate.arrived(total)
        if not gate.paused and (p.owed >= p.refill or p.owed_bytes >= p.refill_bytes > 0):
            self._credit(frame.id, p)

    def _gated_item(self, frame: StreamItem, p: _Pending) -> None:
        """An item of a stream with a gate: counted in bytes, credited while not paused."""
        size = self.channel.last_size if self.channel is not None else 0
        if p.refill_bytes and p.received_bytes >= p.granted_bytes:
            self._protocol_violation(
                f"sent item {p.received} of stream {frame.id} past its byte credit of "
                f"{p.granted_bytes} bytes"
            )
            return
        p.received_bytes += size
        assert p.sizes is not None and p.queue is not None and p.gate is not None
        p.sizes.append(size)
        p.queue.put_nowait(frame.value)
        p.owed += 1
        p.owed_bytes += size
        gate = p.gate
        gate.arrived(size)
        if not gate.paused and (p.owed >= p.refill or p.owed_bytes >= p.refill_bytes > 0):
            self._credit(frame.id, p)

    def _credit(self, call_id: int, p: _Pending) -> None:
        """Give the worker the credit owed for the items received since the last."""
        if not p.owed or self._pending.get(call_id) is not p or not self.alive:
            return
        p.granted += p.owed
        p.granted_bytes += p.owed_bytes
        self._send(Credit(id=call_id, n=p.owed, bytes=p.owed_bytes), flush=False)
        p.owed = p.owed_bytes = 0

    def call_info(self, call_id: int) -> tuple[str, str]:
        """(tool, traceparent) of call ``call_id`` while it is in flight, else ("", "");
        for log lines that name their call."""
        p = self._pending.get(call_id)
        return ("", "") if p is None else (p.tool, p.traceparent)

    def _emit_log(self, level: str, message: str, call_id: int) -> None:
        if self._on_log is not None:
            self._on_log(self.spec.plugin, level, message, call_id)
        else:
            log.log(
                logging.getLevelName(level.upper()) if level != "warning" else 30,
                "[%s] %s",
                self.spec.plugin,
                message,
            )

    def _protocol_violation(self, what: str) -> None:
        # The first violation is the reason (frames read with it may break it again).
        if self._kill_reason is None:
            self._kill_reason = f"broke the wire protocol: it {what}"
        self.kill()

    def _on_close(self, exc: BaseException | None) -> None:
        if isinstance(exc, ProtocolError) and self._kill_reason is None:
            self._kill_reason = f"broke the wire protocol: {exc}"
        # The process is surely going away now; make sure of it and collect the reason.
        task = asyncio.get_running_loop().create_task(self._reap())
        self._io_tasks.append(task)

    async def _reap(self) -> None:
        if self._kill_reason is not None:
            self.kill()
        try:
            rc = await asyncio.wait_for(self.proc.wait(), CHANNEL_CLOSE_GRACE)
        except TimeoutError:
            # Alive with its channel closed: it closed the channel itself, and its
            # SIGKILL is the host's doing, not the kernel's.
            self.kill(
                f"closed its channel to the host and did not exit within "
                f"{CHANNEL_CLOSE_GRACE:g}s; the host killed it"
            )
            rc = await self.proc.wait()
        oom_kills = 0
        if self._kill_reason is None and self.plan.oom_kills is not None:
            # The cgroup outlives the worker until its plan is cleaned up; a file read.
            with contextlib.suppress(OSError, ValueError):
                oom_kills = await asyncio.to_thread(self.plan.oom_kills)
        self._finish(self._describe_exit(rc, oom_kills))

    def _describe_exit(self, rc: int, oom_kills: int = 0) -> str:
        if self._kill_reason is not None:
            return self._kill_reason
        if self.plan.exit_status is not None:  # e.g. bubblewrap's 128 + N for signal N
            rc = self.plan.exit_status(rc)
        if rc == -signal.SIGKILL and oom_kills:
            return (
                f"exited on signal SIGKILL (the kernel's out-of-memory killer ended "
                f"{oom_kills} of its processes: they used up its memory limit of "
                f"{self.spec.limits.memory_mb} MiB)"
            )
        return describe_exit(rc)

    def _finish(self, reason: str) -> None:
        if self.closed.done():
            return
        self.closed.set_result(reason)
        self._deadlines.close()
        err_text = f"worker for {self.label} {reason}"
        if not self._hello.done():
            self._hello.set_exception(
                WorkerCrashed(f"{err_text} before its handshake; see the host log for its output")
            )
        pending, self._pending = self._pending, {}
        for call_id, p in pending.items():
            exc = WorkerCrashed(
                f"{err_text} while call {call_id} was running; the call may be retried "
                "(the plugin is restarted)",
                data={"plugin": self.spec.plugin, "version": self.spec.version, "reason": reason},
            )
            if p.future is not None and not p.future.done():
                p.future.set_exception(exc)
            elif p.queue is not None:
                p.queue.put_nowait(exc)
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(WorkerCrashed(err_text))
        self._pings.clear()
        # Ending the jail may wait for its processes, and removing the scratch directory
        # walks it: both off the event loop. close() waits for them.
        in_thread(self._loop, self._release).add_done_callback(self._on_released)

    def _on_released(self, done: asyncio.Future[None]) -> None:
        if not done.cancelled():
            done.exception()  # _release logs its own failures
        if not self.released.done():
            self.released.set_result(None)

    def _release(self) -> None:
        if self.plan.cleanup is not None:
            try:
                self.plan.cleanup()
            except Exception:
                log.exception("isolation cleanup failed for %s", self.label)
        shutil.rmtree(self.spec.work_dir, ignore_errors=True)

    # -- calls ---------------------------------------------------------------------
    def _send(self, frame: Frame, *, flush: bool = True) -> None:
        if self.channel is None or self.closed.done():
            raise WorkerCrashed(
                f"worker for {self.label} is not running"
                + (f": {self.closed.result()}" if self.closed.done() else "")
            )
        self.channel.send(frame, flush=flush)

    async def call(
        self,
        tool: str,
        args: dict[str, Any] | None,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_log: CallLogCallback | None = None,
        traceparent: str = "",
        items: bool = False,
        kind: str = "tool",
    ) -> Any:
        """Run one call; cancelling the awaiting task cancels the call in the worker.

        ``on_progress`` and ``on_log`` receive this call's progress and log lines;
        ``traceparent`` (W3C) is the trace context the call's spans in the worker nest
        under. ``items``: a batch tool's answer with failed items comes back as
        :class:`~mcphost.sdk.errors.BatchResults` (the batcher splits it among its
        callers); otherwise the first failed item's error fails the call. ``kind`` is
        the :class:`Call` 's: "tool", "resource", "prompt" or "complete"."""
        call_id = next(self._ids)
        fut: asyncio.Future[Any] = self._loop.create_future()
        # A call made while others are in flight waits for the end of this turn of the
        # loop, to leave in one write with the calls made beside it; a lone call leaves
        # at once.
        flush = not self._pending
        self._pending[call_id] = pending = _Pending(
            fut,
            None,
            on_progress,
            tool=tool,
            timeout=timeout,
            on_log=on_log,
            traceparent=traceparent,
            items=items,
        )
        self.calls_total += 1
        try:
            self._send(
                Call(
                    id=call_id,
                    tool=tool,
                    args=args or {},
                    timeout=timeout,
                    progress=on_progress is not None,
                    traceparent=traceparent,
                    kind=kind,
                ),
                flush=flush,
            )
        except MCPHostError:
            self._pending.pop(call_id, None)
            raise
        if timeout is not None:
            self._deadlines.add(self._loop.time() + timeout + DEADLINE_GRACE, call_id)
        try:
            return await fut
        except (asyncio.CancelledError, ToolTimeout):
            if self._pending.pop(call_id, None) is not None and self.alive:
                self.channel.send(Cancel(id=call_id))  # type: ignore[union-attr]
            raise
        finally:
            if pending.asking:
                pending.stop_asking()

    def _expire(self, call_id: int) -> None:
        p = self._pending.pop(call_id, None)
        if p is not None and p.future is not None and not p.future.done():
            p.future.set_exception(
                ToolTimeout(
                    f"{self.spec.plugin}.{p.tool} did not answer within {p.timeout:g}s "
                    "and was cancelled; raise the timeout or make the tool faster"
                )
            )
            if self.alive and self.channel is not None:
                self.channel.send(Cancel(id=call_id))

    async def stream(
        self,
        tool: str,
        args: dict[str, Any] | None,
        *,
        window: int = 32,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_log: CallLogCallback | None = None,
        traceparent: str = "",
    ) -> AsyncIterator[Any]:
        """Yield a streaming tool's items; the worker never has more than ``window`` unread."""
        window = max(1, window)
        call_id = next(self._ids)
        queue = _Inbox(self._loop)
        items = queue.items
        pending = _Pending(
            None,
            queue,
            on_progress,
            granted=window,
            tool=tool,
            on_log=on_log,
            traceparent=traceparent,
        )
        self._pending[call_id] = pending
        self.calls_total += 1
        self._send(
            Call(
                id=call_id,
                tool=tool,
                args=args or {},
                timeout=timeout,
                stream=True,
                window=window,
                progress=on_progress is not None,
                traceparent=traceparent,
            )
        )
        finished = False
        consumed = 0
        refill = max(1, window // 2)
        try:
            while True:
                if not items:
                    await queue.wait()
                item = items.popleft()
                if item is _END:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
                consumed += 1
                if consumed >= refill and self.alive:
                    pending.granted += consumed
                    self._send(Credit(id=call_id, n=consumed))
                    consumed = 0
        finally:
            if pending.asking:
                pending.stop_asking()
            if not finished and self._pending.pop(call_id, None) is not None and self.alive:
                self.channel.send(Cancel(id=call_id))  # type: ignore[union-attr]

    async def gated_stream(
        self,
        tool: str,
        args: dict[str, Any] | None,
        gate: StreamGate,
        *,
        window: int = 32,
        window_bytes: int = 0,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_log: CallLogCallback | None = None,
        traceparent: str = "",
    ) -> AsyncGenerator[Any, None]:
        """Yield a streaming tool's items under ``gate`` (see :class:`StreamGate`): the
        host credits items as they arrive while the gate is not paused, and
        ``window_bytes`` (above 0, with a worker speaking protocol 2) also bounds the
        bytes the worker has sent and not yet been credited for."""
        window = max(1, window)
        call_id = next(self._ids)
        queue = _Inbox(self._loop)
        items = queue.items
        pending = _Pending(
            None,
            queue,
            on_progress,
            granted=window,
            tool=tool,
            on_log=on_log,
            traceparent=traceparent,
        )
        if self.version < 2:
            window_bytes = 0
        sizes: deque[int] = deque()
        pending.gate = gate
        pending.sizes = sizes
        pending.refill = max(1, window // 2)
        pending.granted_bytes = window_bytes
        pending.refill_bytes = max(1, window_bytes // 2) if window_bytes > 0 else 0
        self._pending[call_id] = pending

        def resume() -> None:
            self._credit(call_id, pending)

        def fail(exc: BaseException) -> None:
            if self._pending.get(call_id) is pending:
                del self._pending[call_id]
                if self.alive:
                    self._send(Cancel(id=call_id))
            queue.put_nowait(exc)

        gate.resume = resume
        gate.fail = fail
        self.calls_total += 1
        self._send(
            Call(
                id=call_id,
                tool=tool,
                args=args or {},
                timeout=timeout,
                stream=True,
                window=window,
                progress=on_progress is not None,
                traceparent=traceparent,
                window_bytes=window_bytes,
            )
        )
        finished = False
        try:
            while True:
                if not items:
                    await queue.wait()
                item = items.popleft()
                if item is _END:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                gate.taken(sizes.popleft())
                yield item
        finally:
            gate.resume = gate.fail = None
            if pending.asking:
                pending.stop_asking()
            if not finished and self._pending.pop(call_id, None) is not None and self.alive:
                self.channel.send(Cancel(id=call_id))  # type: ignore[union-attr]

    async def ping(self, timeout: float) -> float:
        """Round-trip a ping; returns seconds taken, raises TimeoutError if none came."""
        n = next(self._ids)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[n] = fut
        t0 = time.perf_counter()
        try:
            # Inside the try: a ping that cannot be sent must not stay in _pings, where
            # the worker's end would fail it with nobody to retrieve the error.
            self._send(Ping(n=n))
            await asyncio.wait_for(fut, timeout)
        finally:
            self._pings.pop(n, None)
        return time.perf_counter() - t0

    # -- lifecycle -----------------------------------------------------------------
    def kill(self, reason: str | None = None) -> None:
        """SIGKILL the worker's whole process group now."""
        if reason is not None and self._kill_reason is None:
            self._kill_reason = reason
        if self.proc.returncode is None:
            # The worker leads its own session (start_new_session), so its group is its pid.
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(self.pid, signal.SIGKILL)
        if self.channel is not None:
            self.channel.abort()

    async def close(self, grace: float = 2.0, reason: str = "the host is stopping") -> None:
        """Ask the worker to stop, wait up to ``grace`` seconds, then kill it. Calls still
        running there are cancelled, and their callers are told ``reason``."""
        if self.closed.done():
            await self._wait_released()
            return
        self._kill_reason = self._kill_reason or "was stopped by the host"
        try:
            if self.channel is not None and not self.channel.closed:
                self.channel.send(Shutdown(reason=reason))
        except MCPHostError:
            pass
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), grace)
        except TimeoutError:
            self.kill()
            await self.closed
        await self._wait_released()

    async def _wait_released(self) -> None:
        """Until the jail is ended and the scratch directory removed."""
        await asyncio.shield(self.released)

    async def stopped(self) -> None:
        """Kill the worker if it still runs and wait until it is gone and released, even
        if the waiting task is cancelled meanwhile (that cancellation is raised after)."""
        self.kill()
        cancelled = await wait_out(self.closed)
        cancelled = await wait_out(self.released) or cancelled
        if cancelled:
            raise asyncio.CancelledError

    async def drain(self, timeout: float) -> bool:
        """Wait until no call is in flight (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline and self.alive:
            await asyncio.sleep(0.01)
        return not self._pending


async def _prepare(backend: IsolationBackend, spec: WorkerSpec, channel_fd: int) -> LaunchPlan:
    """``backend.prepare`` in a thread. A start cancelled meanwhile waits for the thread
    and releases the plan it made (in a thread too) before the cancellation goes on:
    whoever cancelled it (a host closing) finds nothing of it left."""
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(None, backend.prepare, spec, channel_fd)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        await wait_out(fut)
        if not fut.cancelled() and fut.exception() is None:
            cleanup = fut.result().cleanup
            if cleanup is not None:
                await _cleaned(loop, cleanup)
        raise


async def _cleaned(loop: asyncio.AbstractEventLoop, cleanup: Callable[[], None]) -> None:
    """A plan's cleanup, in a thread, waited for whatever cancellation comes meanwhile
    (the caller raises its own error after)."""
    done = in_thread(loop, cleanup)
    await wait_out(done)
    if not done.cancelled() and done.exception() is not None:
        log.error("isolation cleanup failed", exc_info=done.exception())


async def spawn_worker(
    spec: WorkerSpec,
    backend: IsolationBackend,
    *,
    on_log: LogCallback | None = None,
    handshake_timeout: float = 10.0,
) -> WorkerClient:
    """Start a worker for ``spec`` under ``backend`` and complete its handshake."""
    os.makedirs(spec.work_dir, exist_ok=True)
    os.makedirs(spec.data_dir, exist_ok=True)
    host_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    plan: LaunchPlan | None = None
    proc: WorkerProcess | None = None
    try:
        # Preparing a jail writes cgroups and may hand the data directory to the worker's
        # uid (a walk of it): off the event loop.
        plan = await _prepare(backend, spec, child_sock.fileno())
        # Started by the standard library on every loop: uvloop's spawn would let the
        # worker inherit the host's inheritable descriptors (sandbox/spawn.py).
        proc = await start_process(
            plan.argv,
            env=plan.env,
            cwd=plan.cwd,
            pass_fds=plan.pass_fds,
            preexec_fn=plan.preexec_fn,
            limit=64 * 1024,
        )
        child_sock.close()
        if plan.on_spawn is not None:
            plan.on_spawn(proc.pid)
        client = WorkerClient(spec, proc, plan, on_log)
        # A start that fails later also fails the Hello nobody waits for any more.
        client._hello.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        codec = FrameCodec(spec.max_frame)
        client.channel = await open_channel(host_sock, codec, client._on_frame, client._on_close)
    except BaseException:
        # Failed or cancelled before the client owns the worker: release here what the
        # start made (the process, the plan's fds and cgroup); a client's end does it later.
        child_sock.close()
        host_sock.close()
        if proc is not None:
            await proc.end()
        if plan is not None and plan.cleanup is not None:
            await _cleaned(asyncio.get_running_loop(), plan.cleanup)
        raise
    budget = OutputBudget()  # one per worker: stdout and stderr share it
    client._io_tasks += [
        asyncio.create_task(pump_output(proc.stdout, spec.plugin, "stdout", on_log, budget)),
        asyncio.create_task(pump_output(proc.stderr, spec.plugin, "stderr", on_log, budget)),
    ]
    await complete_handshake(client, handshake_timeout)
    return client


async def complete_handshake(client: WorkerClient, handshake_timeout: float) -> None:
    """Wait for the worker's Hello, check it and answer Welcome; a worker that fails
    any of it is killed and the error raised (also used for workers on other nodes,
    whose channel is a connection to the node that relays it)."""
    spec = client.spec
    try:
        hello = await asyncio.wait_for(asyncio.shield(client._hello), handshake_timeout)
        try:
            client.version = negotiate(hello.versions)
        except ProtocolError as exc:
            raise ProtocolError(
                f"worker for {spec.plugin} {spec.version}: {exc.message}", data=exc.data
            ) from None
        if hello.plugin != spec.plugin:
            raise PluginError(
                f"worker for {spec.plugin} says it is plugin {hello.plugin!r}; "
                "check the plugin's entry point"
            )
        # Never trusted: a worker is plugin code and its Hello may hold anything.
        problem = tools_problem(spec.plugin, hello.tools) or features_problem(
            spec.plugin, hello.resources, hello.templates, hello.prompts
        )
        if problem is not None:
            raise HandshakeRefused(
                f"worker for {spec.plugin} {spec.version} was refused: {problem}; the "
                "plugin must be fixed (tool rules: docs/plugin-authors.md, Tools)",
                data={"plugin": spec.plugin, "version": spec.version, "problem": problem},
            )
        client.hello = hello
        assert client.channel is not None
        client.channel.send(Welcome(version=client.version, max_frame=spec.max_frame))
    except TimeoutError:
        client.kill("did not complete its handshake in time")
        await client.stopped()
        raise WorkerCrashed(
            f"worker for {spec.plugin} {spec.version} did not say Hello within "
            f"{handshake_timeout:g}s; check the plugin imports quickly and the host log"
        ) from None
    except BaseException as exc:
        client.kill(str(exc))
        await client.stopped()
        raise
