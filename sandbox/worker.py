"""The worker: one subprocess serving one plugin's tools to the host.

Started as ``python -I -B -m mcphost.sandbox.worker CONFIG_JSON``. It applies its
resource limits to itself, loads the plugin object by its entry point (the host never
imports plugin code), says Hello, then serves many calls at once: async tools on its
loop, sync tools on a bounded thread pool. It exits when the host goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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


#: A sync tool that finished this many times in a row within FAST_SECONDS runs inline on
#: the worker's loop from then on: a thread hop costs more than such a tool itself.
FAST_STREAK = 3
FAST_SECONDS = 0.0005


class _Stream:
    """Credit state of one outgoing stream."""

    __slots__ = ("credit", "event")

    def __init__(self, window: int) -> None:
        self.credit = window
        self.event = asyncio.Event()


class Worker:
    """Serves the calls arriving on one channel."""

    def __init__(self, cfg: WorkerConfig, plugin: Plugin) -> None:
        self.cfg = cfg
        self.plugin = plugin
        self.tools: dict[str, Tool] = plugin.tools
        self.data_dir = Path(cfg.data_dir)
        self.executor = ThreadPoolExecutor(max_workers=cfg.threads, thread_name_prefix="tool")
        self.tasks: dict[int, tuple[asyncio.Task[None], Context]] = {}
        self.streams: dict[int, _Stream] = {}
        self.channel: Channel | None = None
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        #: tool name -> how many times in a row it ran fast; -1 once it was ever slow.
        self._fast: dict[str, int] = {}
        self.welcome: asyncio.Future[Welcome] = self.loop.create_future()
        self.done: asyncio.Future[None] = self.loop.create_future()

    # -- ContextSink ---------------------------------------------------------------
    def _send_threadsafe(self, frame: Frame) -> None:
        if threading.get_ident() == self.loop_thread:
            self._send(frame)
        else:
            self.loop.call_soon_threadsafe(self._send, frame)

    def emit_log(self, call_id: int, level: str, message: str) -> None:
        self._send_threadsafe(Log(level=level, message=message, id=call_id))

    def emit_progress(
        self, call_id: int, progress: float, total: float | None, message: str | None
    ) -> None:
        self._send_threadsafe(Progress(id=call_id, progress=progress, total=total, message=message))

    # -- frames --------------------------------------------------------------------
    def _send(self, frame: Frame) -> None:
        ch = self.channel
        if ch is None or ch.closed:
            return
        try:
            ch.send(frame)
        except MCPHostError as exc:
            call_id = getattr(frame, "id", 0)
            ch.send(Error(id=call_id, code=exc.code, message=exc.message))

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
        elif isinstance(frame, Ping):
            self._send(Pong(n=frame.n))
        elif isinstance(frame, Welcome):
            if not self.welcome.done():
                self.welcome.set_result(frame)
        elif isinstance(frame, Shutdown):
            for task, ctx in list(self.tasks.values()):
                ctx._cancel()
                task.cancel()
            if not self.done.done():
                self.done.set_result(None)
        # Any other frame type is not meant for a worker; ignoring it is safe.

    def on_close(self, exc: BaseException | None) -> None:
        # The host went away (or broke the protocol): nothing left to serve.
        os._exit(0)

    # -- calls ---------------------------------------------------------------------
    def _start_call(self, call: Call) -> None:
        deadline = time.monotonic() + call.timeout if call.timeout is not None else None
        tool = self.tools.get(call.tool)
        if tool is not None and not call.stream and self._fast.get(call.tool, 0) >= FAST_STREAK:
            self._run_inline(call, tool, deadline)
            return
        ctx = Context(
            call_id=call.id,
            plugin=self.plugin.name,
            tool=call.tool,
            data_dir=self.data_dir,
            sink=self,
            deadline=deadline,
        )
        task = self.loop.create_task(self._run_call(call, ctx))
        self.tasks[call.id] = (task, ctx)

    def _run_inline(self, call: Call, tool: Tool, deadline: float | None) -> None:
        """Run a known-fast sync tool right here: no task, no thread hop."""
        ctx = Context(
            call_id=call.id,
            plugin=self.plugin.name,
            tool=call.tool,
            data_dir=self.data_dir,
            sink=self,
            deadline=deadline,
        )
        name = f"{self.plugin.name}.{tool.name}"
        t0 = time.perf_counter()
        try:
            kwargs = tool.bind(call.args, ctx)
            try:
                value = to_wire(tool.fn(**kwargs), name)
            except MCPHostError:
                raise
            except Exception as exc:
                raise ToolError(
                    f"{name} raised {type(exc).__name__}: {exc}",
                    code="tool_exception",
                    data={"exception": type(exc).__name__},
                ) from exc
        except MCPHostError as exc:
            self._send(Error(id=call.id, code=exc.code, message=exc.message, data=exc.data))
        else:
            self._send(Result(id=call.id, value=value))
        if time.perf_counter() - t0 > FAST_SECONDS:
            self._fast[call.tool] = -1

    def _note_duration(self, tool: Tool, seconds: float) -> None:
        if tool.kind != "sync" or self._fast.get(tool.name, 0) < 0:
            return
        if seconds <= FAST_SECONDS:
            self._fast[tool.name] = self._fast.get(tool.name, 0) + 1
        else:
            self._fast[tool.name] = -1

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
                    self._note_duration(tool, ctx.run_seconds)
                    self._send(Result(id=call.id, value=value))
        except TimeoutError:
            ctx._cancel()
            self._send(
                Error(
                    id=call.id,
                    code=ToolTimeout.code,
                    message=f"{self.plugin.name}.{call.tool} did not finish within "
                    f"{call.timeout:g}s; raise the timeout or make the tool faster",
                )
            )
        except asyncio.CancelledError:
            ctx._cancel()
            self._send(Error(id=call.id, code=CallCancelled.code, message="the call was cancelled"))
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
