"""The worker: one subprocess serving one plugin's tools to the host.

Started as ``python -I -B -m mcphost.sandbox.worker CONFIG_JSON``. It applies its
resource limits to itself, loads the plugin object by its entry point (the host never
imports plugin code), says Hello, then serves many calls at once: its main thread reads
the channel and runs the sync tools known to be fast, a bounded thread pool runs the
other sync tools and the sync generators, an event loop on a thread of its own runs the
async tools. It exits when the host goes away.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import importlib
import itertools
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
    AskFailed,
    AskUnsupported,
    CallCancelled,
    MCPHostError,
    PluginError,
    ToolError,
    ToolTimeout,
)
from mcphost.sdk.plugin import Plugin, Tool
from mcphost.sdk.runner import batch_to_wire, to_wire

from . import worker_trace
from .buffers import OutBuffer
from .pool import ThreadPool
from .protocol import (
    SUPPORTED_VERSIONS,
    Answer,
    Ask,
    Call,
    Cancel,
    Credit,
    Error,
    Frame,
    FrameCodec,
    Hello,
    Log,
    Notify,
    Ping,
    Progress,
    Result,
    Shutdown,
    Welcome,
    result_frame,
)
from .worker_async import LoopSide
from .worker_io import FrameReader, FrameWriter, Timer, send_or_error
from .worker_sync import FAST_STREAK, SyncStream, SyncTool, close_stream, run_stream

__all__ = ["FAST_STREAK", "WorkerConfig", "apply_limits", "load_plugin", "main"]


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


#: glibc's mallopt parameter for the number of malloc arenas, and the worker's cap.
M_ARENA_MAX = -8
MALLOC_ARENAS = 2
#: How long a worker told to stop waits for its tasks to answer their cancellation.
STOP_GRACE = 1.0


class _QuietSink:
    """The sink of a call whose caller asked for no progress: its logs go to the host,
    its progress reports go nowhere (no frame nobody reads)."""

    __slots__ = ("_w",)

    def __init__(self, worker: Worker) -> None:
        self._w = worker

    def emit_log(self, call_id: int, level: str, message: str) -> None:
        self._w.emit_log(call_id, level, message)

    def emit_progress(
        self, call_id: int, progress: float, total: float | None, message: str | None
    ) -> None:
        return None

    def emit_notify(self, kind: str, uri: str) -> None:
        self._w.emit_notify(kind, uri)

    def ask(
        self, call_id: int, kind: str, params: dict[str, Any]
    ) -> concurrent.futures.Future[Any]:
        return self._w.ask(call_id, kind, params)


#: The first protocol version with Ask and Answer frames.
ASK_VERSION = 3


class Worker:
    """Serves the calls arriving on one channel.

    The main thread reads the channel (:meth:`serve_forever`). Sync tools run right
    there once they are known to be fast (see :class:`SyncTool`), else on the thread
    pool, whose threads send their answers themselves; a sync generator's stream runs
    on a pool thread too. Async tools and async generators run on the event loop's
    thread (:class:`LoopSide`). Whoever has a frame to send writes it.
    """

    def __init__(self, cfg: WorkerConfig, plugin: Plugin, sock: socket.socket) -> None:
        self.cfg = cfg
        self.plugin = plugin
        self.tools: dict[str, Tool] = plugin.tools
        self.data_dir = Path(cfg.data_dir)
        self.codec = FrameCodec(cfg.max_frame)
        #: The protocol version the host chose (its Welcome); 1 until it arrives.
        self.version = 1
        self.reader = FrameReader(sock, self.codec)
        self.writer = FrameWriter(sock, self.codec)
        self.executor = ThreadPool(cfg.threads, "tool")
        #: Calls running on pool threads (sync tools, sync generators' streams). Whoever
        #: pops a call from here (its thread when done, a cancel, its deadline) is the
        #: one who answers it.
        self.jobs: dict[int, tuple[Call, Context | None]] = {}
        #: Ids of the calls whose tools are running on pool threads now. One that is no
        #: longer in ``jobs`` was answered (deadline, cancel) and holds its thread still.
        self.running: set[int] = set()
        self.sync_streams: dict[int, SyncStream] = {}
        self.timer = Timer(self.jobs, self._job_timed_out, self.writer.flush)
        self.aio = LoopSide(self)
        self.reader_thread = threading.get_ident()
        self._sync = {
            name: SyncTool(t, f"{plugin.name}.{name}")
            for name, t in self.tools.items()
            if t.kind == "sync"
        }
        self._gens = {name for name, t in self.tools.items() if t.kind == "sync_gen"}
        self._quiet = _QuietSink(self)
        #: The frames answering the read being handled (see :meth:`_batch_frame`).
        self._batch = OutBuffer()
        #: Why the host asked this worker to stop (Shutdown.reason), for cancelled calls.
        self.stop_reason = ""
        #: Questions to the client waiting for their Answer, by (call id, ask number).
        self.asks: dict[tuple[int, int], concurrent.futures.Future[Any]] = {}
        self._ask_numbers = itertools.count(1)

    # -- ContextSink ---------------------------------------------------------------
    def _emit(self, frame: Frame, call_id: int) -> None:
        ident = threading.get_ident()
        if ident == self.reader_thread:
            # An inline tool: its frames leave with its answer, at the end of the read.
            self._batch_frame(frame, call_id)
        elif ident == self.aio.ident:
            self.aio.send(frame, call_id)
        else:
            send_or_error(self.writer, frame, call_id, now=True)

    def emit_log(self, call_id: int, level: str, message: str) -> None:
        self._emit(Log(level=level, message=message, id=call_id), call_id)

    def emit_progress(
        self, call_id: int, progress: float, total: float | None, message: str | None
    ) -> None:
        self._emit(Progress(id=call_id, progress=progress, total=total, message=message), call_id)

    def emit_notify(self, kind: str, uri: str) -> None:
        self._emit(Notify(kind=kind, uri=uri), 0)

    def ask(
        self, call_id: int, kind: str, params: dict[str, Any]
    ) -> concurrent.futures.Future[Any]:
        """Send call ``call_id``'s question to the host; the future gets the Answer."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if self.version < ASK_VERSION:
            future.set_exception(
                AskUnsupported(
                    f"{self.plugin.name}: the host speaks worker protocol {self.version}, "
                    f"which cannot carry a tool's questions (version {ASK_VERSION} can); "
                    "upgrade mcphost on the host"
                )
            )
            return future
        if threading.get_ident() == self.reader_thread:
            future.set_exception(
                AskUnsupported(
                    f"{self.plugin.name}: a sync tool asked its client from the worker's "
                    "channel thread, which must stay free to read the answer; call "
                    "ctx.sample_sync/ctx.elicit_sync in the tool's own function, or make "
                    "the tool async"
                )
            )
            return future
        key = (call_id, next(self._ask_numbers))
        self.asks[key] = future
        future.add_done_callback(lambda _f: self.asks.pop(key, None))
        self._emit(Ask(id=call_id, n=key[1], kind=kind, params=params), call_id)
        return future

    def _answered(self, frame: Answer) -> None:
        future = self.asks.pop((frame.id, frame.n), None)
        if future is None or future.done():
            return  # its call ended, or the tool stopped waiting
        if frame.code:
            cls = AskUnsupported if frame.code == AskUnsupported.code else AskFailed
            future.set_exception(cls(frame.message))
        else:
            future.set_result(frame.value)

    def _drop_asks(self, call_id: int) -> None:
        """Cancel the questions of a call that was answered early."""
        for key in [k for k in self.asks if k[0] == call_id]:
            future = self.asks.pop(key, None)
            if future is not None:
                future.cancel()

    # -- the channel's thread --------------------------------------------------------
    def serve_forever(self) -> None:
        """Read and handle frames until the host says Shutdown (then return) or goes
        away (then the worker exits)."""
        read = self.reader.read
        writer = self.writer
        sync = self._sync
        gens = self._gens
        jobs = self.jobs
        inline_ok = self.cfg.inline
        batch = self._batch
        while True:
            try:
                frames = read()
            except MCPHostError as exc:  # the host broke the protocol: nothing to serve
                print(f"mcphost worker: {exc.message}", file=sys.stderr, flush=True)
                os._exit(0)
            except OSError as exc:
                # The channel's fd was closed in this process (by plugin code): serve no
                # more, and leave the host to see the closed channel and end the worker.
                print(f"mcphost worker: channel unusable: {exc}", file=sys.stderr, flush=True)
                writer.close()
                threading.Event().wait()
            if frames is None:
                os._exit(0)  # the host went away
            to_loop: list[Frame] | None = None
            for frame in frames:
                kind = type(frame)
                if kind is Call:
                    assert isinstance(frame, Call)
                    if frame.kind != "tool":
                        pass  # a resource read, prompt or completion: on the loop
                    elif not frame.stream:
                        st = sync.get(frame.tool)
                        if st is not None:
                            if st.inline and inline_ok:
                                self._run_inline(frame, st)
                            else:
                                self._post_job(frame, st)
                            continue
                    elif frame.tool in gens:
                        self._start_sync_stream(frame)
                        continue
                elif kind is Credit:
                    assert isinstance(frame, Credit)
                    ss = self.sync_streams.get(frame.id)
                    if ss is not None:
                        if ss.add_credit(frame.n, frame.bytes):
                            self._post_stream(frame.id, ss)
                        continue
                elif kind is Cancel:
                    assert isinstance(frame, Cancel)
                    if frame.id in jobs:
                        self._cancel_job(frame.id)
                        continue
                elif kind is Answer:
                    assert isinstance(frame, Answer)
                    self._answered(frame)
                    continue
                elif kind is Welcome:
                    assert isinstance(frame, Welcome)
                    self.codec.max_frame = frame.max_frame
                    self.version = frame.version
                    continue
                elif kind is Shutdown:
                    assert isinstance(frame, Shutdown)
                    writer.write(self._batch)
                    self._shutdown(frame.reason)
                    return
                elif kind is not Ping:
                    continue  # not meant for a worker; ignoring it is safe
                if to_loop is None:
                    to_loop = [frame]
                else:
                    to_loop.append(frame)
            if batch.used:
                writer.write(batch)
            elif batch.kept:
                batch.clear()  # a large answer's buffer goes once no large one came for a while
            if to_loop is not None:
                self.aio.post(to_loop)

    def _shutdown(self, reason: str) -> None:
        self.stop_reason = reason
        for call_id in list(self.jobs):
            self._cancel_job(call_id)
        self.aio.stop(STOP_GRACE)
        self.writer.close()

    # -- calls ---------------------------------------------------------------------
    def context(self, call: Call, deadline: float | None) -> Context:
        return Context(
            call_id=call.id,
            plugin=self.plugin.name,
            tool=call.tool,
            data_dir=self.data_dir,
            sink=self if call.progress else self._quiet,
            deadline=deadline,
            traceparent=call.traceparent,
        )

    def _run_inline(self, call: Call, st: SyncTool) -> None:
        """Known to be fast: run it right here, with no thread hop; the answer leaves
        with the others of this read."""
        deadline = _deadline(call)
        # A tool that takes no Context gets none: nothing could see it.
        ctx = self.context(call, deadline) if st.context_param is not None else None
        self._batch_frame(self._execute(call, st, ctx, deadline, inline=True), call.id)

    def _batch_frame(self, frame: Frame, call_id: int) -> None:
        """On the channel's thread: add ``frame`` to the answers of this read, which
        leave in one write once every frame of the read is handled."""
        try:
            self.codec.encode_out(frame, self._batch)
        except MCPHostError as exc:
            error = Error(id=call_id, code=exc.code, message=exc.message)
            self.codec.encode_out(error, self._batch)

    def _post_job(self, call: Call, st: SyncTool) -> None:
        deadline = _deadline(call)
        ctx = self.context(call, deadline) if st.context_param is not None else None
        self.jobs[call.id] = (call, ctx)
        if deadline is not None:
            self.timer.add(deadline, call.id)
        run = contextvars.copy_context().run
        self.executor.post(run, self._pool_job, call, st, ctx, deadline)

    def _execute(
        self,
        call: Call,
        st: SyncTool,
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
            token = worker_trace.attach(call.traceparent) if call.traceparent else None
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
                if token is not None:
                    worker_trace.detach(token)
                if ctx is not None:
                    ctx.run_seconds = seconds
            if deadline is not None and time.monotonic() > deadline:
                return self.timeout_error(call)
            if tool.batch:
                return result_frame(call.id, batch_to_wire(value, name), self.version)
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
        self, call: Call, st: SyncTool, ctx: Context | None, deadline: float | None
    ) -> None:
        """On a pool thread: run the tool and send its answer, unless a cancel or the
        deadline answered the call first."""
        if call.id not in self.jobs:
            return  # answered while it waited for a thread: nobody wants its result
        self.running.add(call.id)
        try:
            frame = self._execute(call, st, ctx, deadline, inline=False)
        except BaseException as exc:  # SystemExit and the like end the worker
            self.exit_from(exc)
            raise
        finally:
            self.running.discard(call.id)
        if self.jobs.pop(call.id, None) is not None:
            send_or_error(self.writer, frame, call.id, now=True)

    def cancelled(self, call_id: int) -> Error:
        """A cancelled call's answer: with the host's reason when the host stopped us."""
        message = "the call was cancelled"
        if self.stop_reason:
            message += f": {self.stop_reason}"
        return Error(id=call_id, code=CallCancelled.code, message=message)

    def timeout_error(self, call: Call) -> Error:
        return Error(
            id=call.id,
            code=ToolTimeout.code,
            message=f"{self.plugin.name}.{call.tool} did not finish within "
            f"{call.timeout:g}s; raise the timeout or make the tool faster",
        )

    def _answer_early(self, call_id: int, timed_out: bool) -> None:
        """A cancel or the deadline answers a call running on a thread: the call's
        context is cancelled, a parked stream's generator is closed on a thread."""
        job = self.jobs.pop(call_id, None)
        if job is None:
            return
        call, ctx = job
        if ctx is not None:
            ctx._cancel()
        if self.asks:
            self._drop_asks(call_id)
        ss = self.sync_streams.pop(call_id, None)
        if ss is not None and ss.unpark():
            self.executor.post(close_stream, ss)
        frame = self.timeout_error(call) if timed_out else self.cancelled(call_id)
        self.writer.send(frame)

    def _cancel_job(self, call_id: int) -> None:
        self._answer_early(call_id, timed_out=False)

    def _job_timed_out(self, call_id: int) -> None:
        self._answer_early(call_id, timed_out=True)

    # -- streams of sync generators ------------------------------------------------
    def _start_sync_stream(self, call: Call) -> None:
        deadline = _deadline(call)
        ctx = self.context(call, deadline)
        tool = self.tools[call.tool]
        window = call.window if call.window > 0 else 1 << 30
        ss = SyncStream(tool, f"{self.plugin.name}.{call.tool}", window, call.window_bytes)
        self.jobs[call.id] = (call, ctx)
        self.sync_streams[call.id] = ss
        if deadline is not None:
            self.timer.add(deadline, call.id)
        self._post_stream(call.id, ss)

    def _post_stream(self, call_id: int, ss: SyncStream) -> None:
        job = self.jobs.get(call_id)
        if job is None:
            return
        call, ctx = job
        assert ctx is not None
        run = contextvars.copy_context().run
        self.executor.post(run, run_stream, self, call, ctx, ss)

    def exit_from(self, exc: BaseException) -> None:
        """A tool raised SystemExit (or the like): the worker ends, as it asked."""
        self.writer.close()
        code = exc.code if isinstance(exc, SystemExit) else 1
        os._exit(code if isinstance(code, int) else 1)


def _deadline(call: Call) -> float | None:
    """The call's deadline on ``time.monotonic()``, or None."""
    return time.monotonic() + call.timeout if call.timeout is not None else None


def serve(cfg: WorkerConfig, plugin: Plugin) -> None:
    """Handshake with the host on the configured fd, then serve until told to stop."""
    sock = socket.socket(fileno=cfg.fd)
    sock.setblocking(True)
    worker = Worker(cfg, plugin, sock)
    worker.writer.send(
        Hello(
            versions=list(SUPPORTED_VERSIONS),
            plugin=plugin.name,
            plugin_version=cfg.version,
            tools=plugin.specs(),
            pid=os.getpid(),
            resources=plugin.resource_specs(),
            templates=plugin.template_specs(),
            prompts=plugin.prompt_specs(),
        )
    )
    # The loop starts while the host reads the Hello: off the handshake's path.
    worker.aio.start()
    worker.serve_forever()


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
    """Ask the kernel to SIGKILL this worker when the host process dies, and cap glibc's
    malloc arenas.

    Every thread that allocates gets an arena of its own, each reserving 64 MiB of
    address space, which RLIMIT_AS (the worker's memory limit) counts although nothing
    is used: the worker's threads (the channel's, the loop's, the timer's, the pool's)
    run Python under one lock, so they gain nothing from separate arenas.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        mallopt = getattr(libc, "mallopt", None)  # glibc; musl has none
        if mallopt is not None:
            mallopt(M_ARENA_MAX, MALLOC_ARENAS)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    cfg: WorkerConfig | None = None
    try:
        cfg = msgspec.json.decode(args[0].encode(), type=WorkerConfig)
        # The channel stays in this process: a child the plugin starts (at import or
        # from a tool, on any event loop: uvloop's spawn does not close descriptors)
        # must not be able to speak for the worker.
        os.set_inheritable(cfg.fd, False)
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
        serve(cfg, plugin)
    os._exit(0)


if __name__ == "__main__":
    main()
