"""The worker's event loop, on a thread of its own: async tools, streams of async
generators, pings.

The channel's thread hands this side the frames meant for it, all the frames of one
read in one ``call_soon_threadsafe``. Frames sent from the loop leave together at the
end of the loop's turn (a lone call's answer at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import TYPE_CHECKING

from mcphost.sdk.context import Context
from mcphost.sdk.errors import MCPHostError, ToolNotFound
from mcphost.sdk.feature_runner import run_feature
from mcphost.sdk.plugin import Tool
from mcphost.sdk.runner import invoke, iterate

from . import loops, worker_trace
from .protocol import (
    ITEMS_VERSION,
    Call,
    Cancel,
    Credit,
    Error,
    Frame,
    Ping,
    Pong,
    Result,
    StreamEnd,
    StreamItem,
    result_frame,
)
from .worker_io import send_or_error
from .worker_sync import flush_every

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["LoopSide"]


class _Stream:
    """Credit state of one outgoing stream on the loop."""

    __slots__ = ("bytes", "credit", "event")

    def __init__(self, window: int, window_bytes: int) -> None:
        self.credit = window
        #: Bytes that may still be sent (one item may pass it); huge without byte credit.
        self.bytes = window_bytes if window_bytes > 0 else 1 << 62
        self.event = asyncio.Event()


class LoopSide:
    """The worker's loop thread and the calls it runs."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ident = 0  # the loop thread's id
        self.ready = threading.Event()
        #: Calls running as tasks (async tools, async streams).
        self.tasks: dict[int, tuple[asyncio.Task[None], Context]] = {}
        self.streams: dict[int, _Stream] = {}
        self._flush_scheduled = False

    # -- the thread ----------------------------------------------------------------
    def start(self) -> None:
        threading.Thread(target=self._run, name="loop", daemon=True).start()

    def _run(self) -> None:
        try:
            loop = loops.new_event_loop()
        except Exception:  # a loop that cannot start: the stdlib one serves
            loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        self.ident = threading.get_ident()
        loop.call_soon(self.ready.set)
        try:
            loop.run_forever()
        except BaseException as exc:  # SystemExit from a tool ends the worker, as it says
            self.w.exit_from(exc)

    def post(self, frames: list[Frame]) -> None:
        """From the channel's thread: handle ``frames`` on the loop."""
        if self.loop is None:
            self.ready.wait()
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._on_frames, frames)

    def stop(self, bound: float) -> None:
        """From the channel's thread: cancel every task and wait (up to ``bound``
        seconds) for their answers to be sent."""
        loop = self.loop
        if loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._stop(bound), loop)
        with contextlib.suppress(Exception):  # a loop held up by a tool: leave it
            fut.result(bound + 0.5)

    async def _stop(self, bound: float) -> None:
        tasks = []
        for task, ctx in list(self.tasks.values()):
            ctx._cancel()
            task.cancel()
            tasks.append(task)
        if tasks:
            await asyncio.wait(tasks, timeout=bound)
        self.w.writer.flush()

    # -- frames --------------------------------------------------------------------
    def send(self, frame: Frame, call_id: int = 0, *, now: bool = False) -> int:
        """Send from the loop's thread: now, or at the end of this turn of the loop.
        Returns the length of the frame's body."""
        writer = self.w.writer
        size = send_or_error(writer, frame, call_id, now=False)
        if now:
            writer.flush()
        else:
            self._flush_soon()
        return size

    def _flush_soon(self) -> None:
        """Write what is queued at the end of this turn of the loop."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self.loop is not None
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self.w.writer.flush()

    def _on_frames(self, frames: list[Frame]) -> None:
        for frame in frames:
            if isinstance(frame, Call):
                self._start(frame)
            elif isinstance(frame, Credit):
                st = self.streams.get(frame.id)
                if st is not None:
                    st.credit += frame.n
                    st.bytes += frame.bytes
                    st.event.set()
            elif isinstance(frame, Cancel):
                entry = self.tasks.get(frame.id)
                if entry is not None:
                    entry[1]._cancel()
                    entry[0].cancel()
            elif isinstance(frame, Ping):
                # Answered here, so a Pong also says the loop is not held up.
                self.send(Pong(n=frame.n, stuck=self.w.stuck_threads()), now=True)

    # -- calls ---------------------------------------------------------------------
    def _start(self, call: Call) -> None:
        assert self.loop is not None
        deadline = time.monotonic() + call.timeout if call.timeout is not None else None
        ctx = self.w.context(call, deadline)
        task = self.loop.create_task(self._run_call(call, ctx))
        self.tasks[call.id] = (task, ctx)

    async def _run_call(self, call: Call, ctx: Context) -> None:
        w = self.w
        try:
            if call.kind != "tool":
                async with asyncio.timeout(call.timeout):
                    value = await run_feature(
                        w.plugin, call.kind, call.tool, call.args, ctx, w.executor
                    )
                self.send(Result(id=call.id, value=value), call.id, now=len(self.tasks) <= 1)
                return
            tool = w.tools.get(call.tool)
            if tool is None:
                raise ToolNotFound(
                    f"plugin {w.plugin.name} has no tool {call.tool!r}; "
                    f"it has: {', '.join(sorted(w.tools))}"
                )
            async with asyncio.timeout(call.timeout):
                if call.stream:
                    await self._run_stream(call, tool, ctx)
                else:
                    if call.traceparent:
                        # This task's own context: detached with the task.
                        worker_trace.attach(call.traceparent)
                    value = await invoke(tool, call.args, ctx, w.executor)
                    if ctx.deadline is not None and time.monotonic() > ctx.deadline:
                        # Returned past the deadline (perhaps because of it): a timeout.
                        raise TimeoutError
                    self.send(
                        result_frame(call.id, value, w.version),
                        call.id,
                        now=len(self.tasks) <= 1,
                    )
        except TimeoutError:
            ctx._cancel()
            self.send(w.timeout_error(call), now=True)
        except asyncio.CancelledError:
            ctx._cancel()
            self.send(w.cancelled(call.id), now=True)
        except MCPHostError as exc:
            self.send(Error(id=call.id, code=exc.code, message=exc.message, data=exc.data))
        except Exception as exc:  # a bug in the worker itself; keep serving
            self.send(
                Error(
                    id=call.id,
                    code="worker_error",
                    message=f"worker error in {call.tool}: {type(exc).__name__}: {exc}",
                )
            )
        finally:
            self.tasks.pop(call.id, None)
            self.streams.pop(call.id, None)

    async def _run_stream(self, call: Call, tool: Tool, ctx: Context) -> None:
        st = _Stream(call.window if call.window > 0 else 1 << 30, call.window_bytes)
        self.streams[call.id] = st
        seq = 0
        writer = self.w.writer
        # Protocol 4: consecutive items share Items frames; older hosts get a frame each.
        batched = self.w.version >= ITEMS_VERSION
        every = flush_every(call.window)
        agen = iterate(tool, call.args, ctx, self.w.executor)
        try:
            async for item in agen:
                while st.credit <= 0 or st.bytes <= 0:
                    st.event.clear()
                    await st.event.wait()
                st.credit -= 1
                # Items leave at the end of the loop's turn, or every ``every`` items
                # of a generator that does not wait: the consumer starts on them while
                # the generator makes the next ones.
                if batched:
                    st.bytes -= writer.queue_item(call.id, seq, item)
                    self._flush_soon()
                else:
                    st.bytes -= self.send(StreamItem(id=call.id, seq=seq, value=item), call.id)
                seq += 1
                if not seq % every:
                    writer.flush()
        finally:
            await agen.aclose()
        self.send(StreamEnd(id=call.id, count=seq), call.id)
