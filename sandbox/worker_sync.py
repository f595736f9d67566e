"""Where the worker runs sync tools, and how a sync generator's items leave.

A sync tool runs inline on the thread that reads the channel once it has proved fast
(:class:`SyncTool`), else on the worker's thread pool. A sync generator called as a
stream runs on a pool thread that sends its items itself, in batches bounded by the
stream's credit window (:class:`SyncStream`): no thread hop per item.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from mcphost.sdk.context import Context
from mcphost.sdk.errors import MCPHostError, ToolError
from mcphost.sdk.plugin import Tool
from mcphost.sdk.runner import to_wire

from .protocol import ITEMS_VERSION, Call, Error, Frame, StreamEnd, StreamItem
from .worker_io import send_or_error

if TYPE_CHECKING:
    from .worker import Worker

__all__ = [
    "FAST_SECONDS",
    "FAST_STREAK",
    "FORGIVE",
    "MAX_STREAK",
    "SyncStream",
    "SyncTool",
    "close_stream",
    "flush_every",
    "run_stream",
]

#: A sync tool runs inline on the channel's thread once it has finished within
#: FAST_SECONDS this many times in a row on the thread pool: a thread hop costs more
#: than such a tool.
FAST_STREAK = 3
FAST_SECONDS = 0.0005
#: An inline tool that runs slow goes back to the thread pool and must then finish fast
#: twice as many times in a row as before to be inlined again, up to MAX_STREAK; every
#: FORGIVE fast runs inline halve that again.
MAX_STREAK = 1024
FORGIVE = 1000

#: A stream's items leave at the latest after this many (fewer when its credit runs out),
#: and after half its window: the host credits them while the next ones are made.
STREAM_BATCH = 128
#: Items queued by a generator that is slow to yield the next one leave after this long.
LINGER = 0.001
#: A stream out of credit waits this long for more on its thread, then gives the
#: thread back to the pool; the credit that comes later starts it on a thread again.
PARK_AFTER = 0.002


_ASKS = frozenset({"sample_sync", "elicit_sync"})


class SyncTool:
    """A sync tool and where it runs: inline on the channel's thread, or on the pool.

    A tool earns the inline path by finishing fast ``need`` times in a row on the pool.
    A slow inline run (the tool's own time, measured by the clock on the wall: a tool
    that sleeps or waits holds the channel's thread as much as one that computes) sends
    it back and doubles ``need``. So a tool that is slow now and then holds up the
    channel ever more rarely, while a fast tool that once looked slow (the worker was
    preempted in the middle of it) is back inline after a few calls.

    While an inline tool runs, the worker reads no frame: a tool that turned slow for
    good delays the pings, and the host replaces a worker that stops answering them.
    """

    __slots__ = ("asks", "context_param", "fast", "inline", "name", "need", "streak", "tool")

    def __init__(self, tool: Tool, name: str) -> None:
        self.tool = tool
        self.name = name  # <plugin>.<tool>, for messages
        self.context_param = tool.signature.context_param
        self.inline = False
        self.streak = 0  # fast runs in a row on the pool
        self.need = FAST_STREAK
        self.fast = 0  # fast runs in a row inline
        #: A tool that asks its client (``ctx.sample_sync``, ``ctx.elicit_sync``) waits
        #: for an answer the channel's thread must read: it never runs there.
        code = getattr(tool.fn, "__code__", None)
        self.asks = code is not None and bool(_ASKS & set(code.co_names))

    def ran_on_pool(self, seconds: float) -> None:
        # Called from pool threads: a lost update only delays a promotion.
        if seconds <= FAST_SECONDS and not self.asks:
            self.streak += 1
            if self.streak >= self.need:
                self.inline = True
                self.fast = 0
        else:
            self.streak = 0

    def ran_inline(self, seconds: float) -> None:
        if seconds <= FAST_SECONDS:
            self.fast += 1
            if self.fast >= FORGIVE:
                self.fast = 0
                self.need = max(FAST_STREAK, self.need // 2)
        else:
            self.inline = False
            self.streak = 0
            self.need = min(self.need * 2, MAX_STREAK)


class SyncStream:
    """The state of a sync generator's stream, shared by its thread and the reader.

    ``granted`` only grows (the reader adds credit), ``sent`` only grows (the stream's
    thread counts items): each has one writer, so neither update is lost, and the
    credit left is their difference.
    """

    __slots__ = (
        "answered",
        "cond",
        "gen",
        "granted",
        "granted_bytes",
        "name",
        "parked",
        "sent",
        "sent_bytes",
        "tool",
    )

    def __init__(self, tool: Tool, name: str, window: int, window_bytes: int = 0) -> None:
        self.tool = tool
        self.name = name
        self.gen: object | None = None  # the generator, once the tool was called
        self.granted = window
        self.sent = 0
        #: Byte credit as items' credit (0: the host gives none, bytes are not bounded).
        self.granted_bytes = window_bytes if window_bytes > 0 else 1 << 62
        self.sent_bytes = 0
        #: True while the stream waits for credit with no thread: whoever sets it back
        #: to False (credit, cancel) starts the next step on the pool.
        self.parked = False
        #: Set once the call was answered by a cancel or its deadline.
        self.answered = False
        self.cond = threading.Condition(threading.Lock())

    @property
    def credit(self) -> int:
        """Items that may be sent now: 0 when out of item or byte credit."""
        if self.sent_bytes >= self.granted_bytes:
            return 0
        return self.granted - self.sent

    def add_credit(self, n: int, nbytes: int = 0) -> bool:
        """Credit from the host; True when the stream was parked and must be restarted."""
        with self.cond:
            self.granted += n
            self.granted_bytes += nbytes
            self.cond.notify()
            if self.parked:
                self.parked = False
                return True
            return False

    def wait_credit(self, release: Callable[[], None]) -> bool:
        """On the stream's thread, out of credit: wait briefly for more. False when
        none came and the stream parked (its thread goes back to the pool); True when
        there is credit, or the call was answered (the thread closes the generator).
        ``release()`` runs just before the stream parks, before credit can start it on
        another thread."""
        with self.cond:
            if self.credit > 0 or self.answered:
                return True
            self.cond.wait(PARK_AFTER)
            if self.credit > 0 or self.answered:
                return True
            release()
            self.parked = True
            return False

    def unpark(self) -> bool:
        """Answered (cancel, deadline): True when no thread runs the stream, so the
        caller must close its generator on one."""
        with self.cond:
            self.answered = True
            self.cond.notify()
            if self.parked:
                self.parked = False
                return True
            return False


_STOP = object()


def run_stream(w: Worker, call: Call, ctx: Context, ss: SyncStream) -> None:
    """On a pool thread: send a sync generator's items while there is credit, then
    park (or end the stream). Items leave in batches: at most STREAM_BATCH, at most
    the credit left, and at the latest LINGER after the first of them was queued."""
    jobs = w.jobs
    cid = call.id
    if cid not in jobs:
        close_stream(ss)
        return
    writer = w.writer
    # Protocol 4: consecutive items share Items frames; older hosts get a frame each.
    batched = w.version >= ITEMS_VERSION
    every = flush_every(call.window)
    answer: Frame | None = None
    parked = False
    w.running.add(cid)
    try:
        if ss.gen is None:
            ss.gen = ss.tool.fn(**ss.tool.bind(call.args, ctx))
        gen = ss.gen
        assert isinstance(gen, Iterator)
        batch = 0
        while True:
            if ss.granted - ss.sent <= 0 or ss.sent_bytes >= ss.granted_bytes:
                if batch:
                    writer.flush()
                    batch = 0
                if not ss.wait_credit(lambda: w.running.discard(cid)):
                    parked = True
                    return  # parked: more credit starts the next step on a thread
            if cid not in jobs:
                close_stream(ss)
                return
            try:
                item = next(gen, _STOP)
            except MCPHostError:
                raise
            except Exception as exc:
                raise ToolError(
                    f"{ss.name} raised {type(exc).__name__}: {exc}", code="tool_exception"
                ) from exc
            if item is _STOP:
                answer = StreamEnd(id=cid, count=ss.sent)
                break
            value = to_wire(item, ss.name)
            if batched:
                ss.sent_bytes += writer.queue_item(cid, ss.sent, value)
            else:
                frame = StreamItem(id=cid, seq=ss.sent, value=value)
                ss.sent_bytes += send_or_error(writer, frame, cid, now=False)
            ss.sent += 1
            batch += 1
            if batch >= every:
                writer.flush()
                batch = 0
            elif batch == 1:
                w.timer.flush_at(time.monotonic() + LINGER)
    except MCPHostError as exc:
        answer = Error(id=cid, code=exc.code, message=exc.message, data=exc.data)
    except Exception as exc:  # a bug in the worker itself; keep serving
        answer = Error(
            id=cid,
            code="worker_error",
            message=f"worker error in {call.tool}: {type(exc).__name__}: {exc}",
        )
    except BaseException as exc:  # SystemExit and the like end the worker
        w.exit_from(exc)
        raise
    finally:
        if not parked:  # a parked stream left ``running`` before it parked
            w.running.discard(cid)
    if jobs.pop(cid, None) is not None:
        w.sync_streams.pop(cid, None)
        send_or_error(writer, answer, cid, now=True)
    else:
        writer.flush()


def flush_every(window: int) -> int:
    """After how many items a stream's queued items leave: STREAM_BATCH, or half the
    stream's window when that is fewer."""
    return STREAM_BATCH if window <= 0 else max(1, min(STREAM_BATCH, window // 2))


def close_stream(ss: SyncStream) -> None:
    """Close a stream's generator (its ``finally`` blocks run), on a pool thread."""
    gen, ss.gen = ss.gen, None
    close = getattr(gen, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()
