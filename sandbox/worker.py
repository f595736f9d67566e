"""The worker: one subprocess serving one plugin's tools to the host.

Started as ``python -I -B -m mcphost.sandbox.worker CONFIG_JSON``. It applies its
resource limits to itself, loads the plugin object by its entry point (the host never
imports plugin code), says Hello, then serves many calls at once: async tools on its
loop, sync tools on a bounded thread pool. It exits when the host goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from mcphost.sdk.context import Context
from mcphost.sdk.errors import (
    CallCancelled,
    MCPHostError,
    PluginError,
    ToolError,
    ToolNotFound,
    ToolTimeout,
)
from mcphost.sdk.plugin import Plugin, Tool
from mcphost.sdk.runner import invoke, iterate, to_wire

from .channel import Channel, open_channel
from .deadlines import Deadlines
from .pool import ThreadPool
from .protocol import (
    SUPPORTED_VERSIONS,
    Call,
    Cancel,
    Credit,
    Error,
    Frame,
    FrameCodec,
    Hello,
    Log,
    Ping,
    Pong,
    Progress,
    Result,
    Shutdown,
    StreamEnd,
    StreamItem,
    Welcome,
)

__all__ = ["WorkerConfig", "apply_limits", "load_plugin", "main"]


class WorkerConfig(msgspec.Struct, frozen=True):
    """What the host tells a worker on its command line."""

    fd: int
    plugin: str
    version: str
    entry: str
    paths: list[str]
    data_dir: str
    limits: dict[str, int | None] = {}
    max_frame: int = 16 * 1024 * 1024
    threads: int = 8
    #: False keeps every sync tool on the thread pool, fast or not (to measure that path).
    inline: bool = True


def apply_limits(limits: dict[str, int | None]) -> None:
    """Set this process's rlimits; called before any plugin code is imported."""
    import resource

    mib = 1024 * 1024

    def cap(res: int, value: int | None) -> None:
        if value is None:
            return
        _, hard = resource.getrlimit(res)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(res, (value, value if res != resource.RLIMIT_CPU else value + 5))

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    mem = limits.get("memory_mb")
    cap(resource.RLIMIT_AS, mem * mib if mem else None)
    cap(resource.RLIMIT_CPU, limits.get("cpu_seconds"))
    cap(resource.RLIMIT_NOFILE, limits.get("open_files"))
    cap(resource.RLIMIT_NPROC, limits.get("processes"))
    fsize = limits.get("file_size_mb")
    cap(resource.RLIMIT_FSIZE, fsize * mib if fsize else None)


def load_plugin(entry: str, paths: list[str]) -> Plugin:
    """Import the object named by ``module:attr`` from ``paths`` and check it is a Plugin."""
    for p in reversed(paths):
        if p not in sys.path:
            sys.path.insert(0, p)
    module_name, _, attr = entry.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    if not isinstance(obj, Plugin):
        raise PluginError(
            f"entry point {entry!r} names a {type(obj).__name__}, not an mcphost.sdk.Plugin; "
            "point the mcphost.plugins entry point at your Plugin object"
        )
    return obj


#: A sync tool runs inline on the worker's loop once it has finished within FAST_SECONDS
#: this many times in a row on the thread pool: a thread hop costs more than such a tool.
FAST_STREAK = 3
FAST_SECONDS = 0.0005
#: An inline tool that runs slow goes back to the thread pool and must then finish fast
#: twice as many times in a row as before to be inlined again, up to MAX_STREAK; every
#: FORGIVE fast runs inline halve that again.
MAX_STREAK = 1024
FORGIVE = 1000


class _SyncTool:
    """A sync tool and where it runs: inline on the loop, or on the thread pool.

    A tool earns the inline path by finishing fast ``need`` times in a row on the pool.
    A slow inline run (the tool's own time, measured by the clock on the wall: a tool
    that sleeps or waits blocks the loop as much as one that computes) sends it back and
    doubles ``need``. So a tool that is slow now and then blocks the loop ever more
    rarely, while a fast tool that once looked slow (the worker was preempted in the
    middle of it) is back inline after a few calls.
    """

    __slots__ = ("context_param", "fast", "inline", "name", "need", "streak", "tool")

    def __init__(self, tool: Tool, name: str) -> None:
        self.tool = tool
        self.name = name  # <plugin>.<tool>, for messages
        self.context_param = tool.signature.context_param
        self.inline = False
        self.streak = 0  # fast runs in a row on the pool
        self.need = FAST_STREAK
        self.fast = 0  # fast runs in a row inline

    def ran_on_pool(self, seconds: float) -> None:
        # Called from pool threads: a lost update only delays a promotion.
        if seconds <= FAST_SECONDS:
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


class _Stream:
    """Credit state of one outgoing stream."""

    __slots__ = ("credit", "event")

    def __init__(self, window: int) -> None:
        self.credit = window
        self.event = asyncio.Event()


class Worker:
    """Serves the calls arriving on one channel.

    Sync tools run inline when they are known to be fast (see :class:`_SyncTool`), else on
    the thread pool, whose threads send their results themselves; async tools and
    streams run as tasks on the loop.
    """

    def __init__(self, cfg: WorkerConfig, plugin: Plugin) -> None:
        self.cfg = cfg
        self.plugin = plugin
        self.tools: dict[str, Tool] = plugin.tools
        self.data_dir = Path(cfg.data_dir)
        self.executor = ThreadPool(cfg.threads, "tool")
        #: Calls running as tasks (async tools, streams).
        self.tasks: dict[int, tuple[asyncio.Task[None], Context]] = {}
        #: Calls of sync tools on the thread pool. Whoever pops a call from here (its
        #: thread when done, a cancel, its deadline) is the one who answers it.
        self.jobs: dict[int, tuple[Call, Context | None]] = {}
        #: Ids of the calls whose tools are running on pool threads now. One that is no
        #: longer in ``jobs`` was answered (deadline, cancel) and holds its thread still.
        self.running: set[int] = set()
        self.streams: dict[int, _Stream] = {}
        self.channel: Channel | None = None
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self._sync = {
            name: _SyncTool(t, f"{plugin.name}.{name}")
            for name, t in self.tools.items()
            if t.kind == "sync"
        }
        self._deadlines = Deadlines(self.loop, self.jobs, self._job_timed_out)
        self.welcome: asyncio.Future[Welcome] = self.loop.create_future()
        self.done: asyncio.Future[None] = self.loop.create_future()
        #: Why the host asked this worker to stop (Shutdown.reason), for cancelled calls.
        self.stop_reason = ""

    # -- ContextSink ---------------------------------------------------------------
    def _send_threadsafe(self, frame: Frame) -> None:
        if threading.get_ident() == self.loop_thread:
            self._send(frame)
            return
        ch = self.channel
        if ch is None or ch.closed:
            return
        try:
            ch.send_threadsafe(frame)
        except MCPHostError as exc:
            if ch.closed:
                return
            call_id = getattr(frame, "id", 0)
            ch.send_threadsafe(Error(id=call_id, code=exc.code, message=exc.message))

    def emit_log(self, call_id: int, level: str, message: str) -> None:
        self._send_threadsafe(Log(level=level, message=message, id=call_id))

    def emit_progress(
        self, call_id: int, progress: float, total: float | None, message: str | None
    ) -> None:
        self._send_threadsafe(Progress(id=call_id, progress=progress, total=total, message=message))

    # -- frames --------------------------------------------------------------------
    def _send(self, frame: Frame, *, flush: bool = True) -> None:
        """Send from the loop's thread; ``flush=False`` lets the frame wait for the
        others sent in this turn of the loop."""
        ch = self.channel
        if ch is None or ch.closed:
            return
        try:
            ch.send(frame, flush=flush)
        except MCPHostError as exc:
            call_id = getattr(frame, "id", 0)
            ch.send(Error(id=call_id, code=exc.code, message=exc.message), flush=flush)

    def on_frame(self, frame: Frame) -> None:
        if isinstance(frame, Call):
            self._start_call(frame)
        elif isinstance(frame, Credit):
            st = self.streams.get(frame.id)
            if st is not None:
                st.credit += frame.n
                st.event.set()
        elif isinstance(frame, Cancel):
            entry = self.tasks.get(frame.id)
            if entry is not None:
                entry[1]._cancel()
                entry[0].cancel()
            else:
                self._cancel_job(frame.id)
        elif isinstance(frame, Ping):
            self._send(Pong(n=frame.n, stuck=self.stuck_threads()))
        elif isinstance(frame, Welcome):
            if not self.welcome.done():
                self.welcome.set_result(frame)
        elif isinstance(frame, Shutdown):
            self.stop_reason = frame.reason
            for task, ctx in list(self.tasks.values()):
                ctx._cancel()
                task.cancel()
            for call_id in list(self.jobs):
                self._cancel_job(call_id)
            if not self.done.done():
                self.done.set_result(None)
        # Any other frame type is not meant for a worker; ignoring it is safe.

    def on_close(self, exc: BaseException | None) -> None:
        # The host went away (or broke the protocol): nothing left to serve.
        os._exit(0)

    # -- calls ---------------------------------------------------------------------
    def _context(self, call: Call, deadline: float | None) -> Context:
        return Context(
            call_id=call.id,
            plugin=self.plugin.name,
            tool=call.tool,
            data_dir=self.data_dir,
            sink=self,
            deadline=deadline,
        )

    def _start_call(self, call: Call) -> None:
        st = self._sync.get(call.tool)
        if st is None or call.stream:
            task_ctx = self._context(call, _deadline(call))
            task = self.loop.create_task(self._run_call(call, task_ctx))
            self.tasks[call.id] = (task, task_ctx)
            return
        deadline = _deadline(call)
        # A tool that takes no Context gets none: nothing could see it.
        ctx = self._context(call, deadline) if st.context_param is not None else None
        if st.inline and self.cfg.inline:
            # Known to be fast: run it right here, with no task and no thread hop.
            self._send(self._execute(call, st, ctx, deadline, inline=True))
            return
        self.jobs[call.id] = (call, ctx)
        if call.timeout is not None:
            self._deadlines.add(self.loop.time() + call.timeout, call.id)
        run = contextvars.copy_context().run
        self.executor.post(run, self._pool_job, call, st, ctx, deadline)

    def _execute(
        self,
        call: Call,
        st: _SyncTool,
        ctx: Context | None,
        deadline: float | None,
        *,
        inline: bool,
    ) -> Frame:
        """Run a sync tool in this thread; the Result or Error frame that answers it.

        A tool that returns after its deadline answers ``tool_timeout``, not its value:
        it may have returned *because* the deadline passed (``ctx.cancelled``), before
        the worker's deadline timer could answer for it.
        """
        tool = st.tool
        name = st.name
        seconds = 0.0
        try:
            # Tool.bind, for a tool that may have no Context.
            kwargs = tool.signature.bind(name, call.args)
            if ctx is not None and st.context_param is not None:
                kwargs[st.context_param] = ctx
            t0 = time.perf_counter()
            try:
                value = tool.fn(**kwargs)
            except MCPHostError:
                raise
            except Exception as exc:
                raise ToolError(
                    f"{name} raised {type(exc).__name__}: {exc}",
                    code="tool_exception",
                    data={"exception": type(exc).__name__},
                ) from exc
            finally:
                seconds = time.perf_counter() - t0
                if ctx is not None:
                    ctx.run_seconds = seconds
            if deadline is not None and time.monotonic() > deadline:
                return _timeout_error(self.plugin.name, call)
            return Result(id=call.id, value=to_wire(value, name))
        except MCPHostError as exc:
            return Error(id=call.id, code=exc.code, message=exc.message, data=exc.data)
        except Exception as exc:  # a bug in the worker itself; keep serving
            return Error(
                id=call.id,
                code="worker_error",
                message=f"worker error in {call.tool}: {type(exc).__name__}: {exc}",
            )
        finally:
            if inline:
                st.ran_inline(seconds)
            else:
                st.ran_on_pool(seconds)

    def stuck_threads(self) -> int:
        """Pool threads still running a call that was already answered (its deadline
        passed, or it was cancelled): a thread cannot be stopped, so each is lost until
        its tool returns. The host replaces a worker once all of them are."""
        jobs = self.jobs
        return sum(1 for call_id in list(self.running) if call_id not in jobs)

    def _pool_job(
        self, call: Call, st: _SyncTool, ctx: Context | None, deadline: float | None
    ) -> None:
        """On a pool thread: run the tool and send its answer, unless a cancel or the
        deadline answered the call first."""
        if call.id not in self.jobs:
            return  # answered while it waited for a thread: nobody wants its result
        self.running.add(call.id)
        try:
            frame = self._execute(call, st, ctx, deadline, inline=False)
        except BaseException as exc:  # SystemExit and the like end the worker, as on the loop
            self.loop.call_soon_threadsafe(_reraise, exc)
            raise
        finally:
            self.running.discard(call.id)
        if self.jobs.pop(call.id, None) is not None:
            self._send_threadsafe(frame)

    def _cancelled(self, call_id: int) -> Error:
        """A cancelled call's answer: with the host's reason when the host stopped us."""
        message = "the call was cancelled"
        if self.stop_reason:
            message += f": {self.stop_reason}"
        return Error(id=call_id, code=CallCancelled.code, message=message)

    def _cancel_job(self, call_id: int) -> None:
        job = self.jobs.pop(call_id, None)
        if job is not None:
            if job[1] is not None:
                job[1]._cancel()
            self._send(self._cancelled(call_id))

    def _job_timed_out(self, call_id: int) -> None:
        job = self.jobs.pop(call_id, None)
        if job is None:
            return
        call, ctx = job
        if ctx is not None:
            ctx._cancel()
        self._send(_timeout_error(self.plugin.name, call))

    async def _run_call(self, call: Call, ctx: Context) -> None:
        try:
            tool = self.tools.get(call.tool)
            if tool is None:
                raise ToolNotFound(
                    f"plugin {self.plugin.name} has no tool {call.tool!r}; "
                    f"it has: {', '.join(sorted(self.tools))}"
                )
            async with asyncio.timeout(call.timeout):
                if call.stream:
                    await self._run_stream(call, tool, ctx)
                else:
                    value = await invoke(tool, call.args, ctx, self.executor)
                    if ctx.deadline is not None and time.monotonic() > ctx.deadline:
                        # Returned past the deadline (perhaps because of it): a timeout.
                        raise TimeoutError
                    self._send(Result(id=call.id, value=value), flush=len(self.tasks) <= 1)
        except TimeoutError:
            ctx._cancel()
            self._send(_timeout_error(self.plugin.name, call))
        except asyncio.CancelledError:
            ctx._cancel()
            self._send(self._cancelled(call.id))
        except MCPHostError as exc:
            self._send(Error(id=call.id, code=exc.code, message=exc.message, data=exc.data))
        except Exception as exc:  # a bug in the worker itself; keep serving
            self._send(
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
        st = _Stream(call.window if call.window > 0 else 1 << 30)
        self.streams[call.id] = st
        seq = 0
        agen = iterate(tool, call.args, ctx, self.executor)
        try:
            async for item in agen:
                while st.credit <= 0:
                    st.event.clear()
                    await st.event.wait()
                st.credit -= 1
                self._send(StreamItem(id=call.id, seq=seq, value=item))
                seq += 1
                ch = self.channel
                if ch is not None:
                    await ch.drain()
        finally:
            await agen.aclose()
        self._send(StreamEnd(id=call.id, count=seq))


def _deadline(call: Call) -> float | None:
    """The call's deadline on ``time.monotonic()``, or None."""
    return time.monotonic() + call.timeout if call.timeout is not None else None


def _timeout_error(plugin: str, call: Call) -> Error:
    return Error(
        id=call.id,
        code=ToolTimeout.code,
        message=f"{plugin}.{call.tool} did not finish within "
        f"{call.timeout:g}s; raise the timeout or make the tool faster",
    )


def _reraise(exc: BaseException) -> None:
    raise exc


async def serve(cfg: WorkerConfig, plugin: Plugin) -> None:
    """Handshake with the host on the configured fd, then serve until told to stop."""
    worker = Worker(cfg, plugin)
    sock = socket.socket(fileno=cfg.fd)
    codec = FrameCodec(cfg.max_frame)
    worker.channel = await open_channel(sock, codec, worker.on_frame, worker.on_close)
    worker.channel.send(
        Hello(
            versions=list(SUPPORTED_VERSIONS),
            plugin=plugin.name,
            plugin_version=cfg.version,
            tools=plugin.specs(),
            pid=os.getpid(),
        )
    )
    welcome = await worker.welcome
    codec.max_frame = welcome.max_frame
    await worker.done
    worker.channel.close()


def _fatal(cfg: WorkerConfig | None, exc: BaseException) -> None:
    """Report a start-up failure to the host as an Error frame with id 0, then exit."""
    if isinstance(exc, MCPHostError):
        code, message = exc.code, exc.message
    else:
        code = "plugin_load_failed"
        message = f"could not load the plugin: {type(exc).__name__}: {exc}"
    print(message, file=sys.stderr, flush=True)
    if cfg is not None:
        try:
            sock = socket.socket(fileno=cfg.fd)
            sock.sendall(FrameCodec().encode(Error(id=0, code=code, message=message)))
        except OSError:
            pass
    os._exit(3)


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this worker when the host process dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    cfg: WorkerConfig | None = None
    try:
        cfg = msgspec.json.decode(args[0].encode(), type=WorkerConfig)
        _die_with_parent()
        apply_limits(cfg.limits)
        plugin = load_plugin(cfg.entry, cfg.paths)
        if plugin.name != cfg.plugin:
            raise PluginError(
                f"entry point {cfg.entry!r} holds plugin {plugin.name!r}, but it was "
                f"installed as {cfg.plugin!r}; make the entry point name match Plugin(name)"
            )
    except BaseException as exc:
        _fatal(cfg, exc)
        return
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(cfg, plugin))
    os._exit(0)


if __name__ == "__main__":
    main()
