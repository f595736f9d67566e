"""Test a plugin's tools: in-process for fast unit tests, or through a real worker.

:class:`ToolTester` runs tools in the test's own process with the same argument
validation, result conversion and error codes as a worker, a temporary data directory,
and the logs and progress reports captured in lists::

    from mcphost.sdk.testing import ToolTester
    from mcphost_textkit import plugin

    def test_upper() -> None:
        with ToolTester(plugin) as t:
            assert t.call("upper", {"text": "hi"}) == "HI"

:func:`run_in_worker` serves the plugin from its directory through a real
:class:`mcphost.host.Host` (a sandboxed worker subprocess, the wire protocol, the
supervisor) and yields a :class:`WorkerTester`::

    async with run_in_worker(plugin) as w:
        assert await w.call("upper", {"text": "hi"}) == "HI"

Import this module explicitly; it is not part of ``mcphost.sdk``'s face because it
pulls in the host for :func:`run_in_worker`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from .context import Context
from .errors import AskUnsupported, BatchResults, PluginFailed, ToolNotFound, ToolTimeout
from .feature_runner import run_feature
from .features import contents_to_mcp
from .plugin import Plugin, Tool
from .runner import invoke, iterate

if TYPE_CHECKING:
    from mcphost.host import Host, HostConfig

__all__ = ["LogLine", "ProgressReport", "ToolTester", "WorkerTester", "run_in_worker"]


class LogLine(NamedTuple):
    """One line a tool logged through its :class:`~mcphost.sdk.Context`."""

    level: str
    message: str
    call_id: int


class ProgressReport(NamedTuple):
    """One progress report a tool made through its :class:`~mcphost.sdk.Context`."""

    progress: float
    total: float | None
    message: str | None
    call_id: int


_wire_encoder = msgspec.msgpack.Encoder()


def _over_the_wire(value: Any) -> Any:
    """What the caller would receive: the value after a MessagePack round trip. A batch
    tool's failed items come back as their errors, in their places."""
    if isinstance(value, BatchResults):
        values = msgspec.msgpack.decode(_wire_encoder.encode(list(value)))
        return [value.error(i) if i in value.errors else v for i, v in enumerate(values)]
    return msgspec.msgpack.decode(_wire_encoder.encode(value))


class ToolTester:
    """Runs one plugin's tools in this process, as a worker would run them.

    ``data_dir``: the plugin's data directory (default: a temporary one, removed by
    :meth:`close`). ``logs`` and ``progress`` collect what the tools report.
    """

    def __init__(
        self,
        plugin: Plugin,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        threads: int = 4,
        sampling_handler: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        elicitation_handler: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if not isinstance(plugin, Plugin):
            raise TypeError(f"ToolTester needs an mcphost.sdk.Plugin, not {type(plugin).__name__}")
        self.plugin = plugin
        self._own_dir = data_dir is None
        self.data_dir = Path(
            tempfile.mkdtemp(prefix=f"mcphost-{plugin.name}-") if data_dir is None else data_dir
        )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs: list[LogLine] = []
        self.progress: list[ProgressReport] = []
        #: URIs the plugin announced as updated (``ctx.notify_resource_updated``).
        self.updated: list[str] = []
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tool")
        self._ids = 0
        #: What answers the tools' ``ctx.sample`` and ``ctx.elicit``: plain functions
        #: from the MCP request's params to its result (recorded in ``asked``).
        self._handlers = {"sample": sampling_handler, "elicit": elicitation_handler}
        self.asked: list[tuple[str, dict[str, Any]]] = []

    # -- ContextSink ---------------------------------------------------------------
    def ask(
        self, call_id: int, kind: str, params: dict[str, Any]
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.asked.append((kind, params))
        handler = self._handlers.get(kind)
        if handler is None:
            option = "sampling_handler" if kind == "sample" else "elicitation_handler"
            future.set_exception(
                AskUnsupported(f"the tool asked to {kind}; give ToolTester({option}=...)")
            )
            return future
        try:
            future.set_result(handler(params))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def emit_log(self, call_id: int, level: str, message: str) -> None:
        self.logs.append(LogLine(level, message, call_id))

    def emit_progress(
        self, call_id: int, progress: float, total: float | None, message: str | None
    ) -> None:
        self.progress.append(ProgressReport(progress, total, message, call_id))

    def emit_notify(self, kind: str, uri: str) -> None:
        if kind == "resource_updated":
            self.updated.append(uri)

    # -- lifecycle -----------------------------------------------------------------
    def __enter__(self) -> ToolTester:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the tool threads and remove the temporary data directory."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- calls ---------------------------------------------------------------------
    def _tool(self, name: str) -> Tool:
        short = name.removeprefix(f"{self.plugin.name}.")
        tool = self.plugin.tools.get(short)
        if tool is None:
            raise ToolNotFound(
                f"plugin {self.plugin.name} has no tool {short!r}; "
                f"it has: {', '.join(sorted(self.plugin.tools))}"
            )
        return tool

    def _context(self, tool: Tool, timeout: float | None) -> Context:
        self._ids += 1
        return Context(
            call_id=self._ids,
            plugin=self.plugin.name,
            tool=tool.name,
            data_dir=self.data_dir,
            sink=self,
            deadline=time.monotonic() + timeout if timeout is not None else None,
        )

    def _timeout_error(self, tool: Tool, timeout: float) -> ToolTimeout:
        return ToolTimeout(
            f"{self.plugin.name}.{tool.name} did not finish within {timeout:g}s; "
            "raise the timeout or make the tool faster"
        )

    async def acall(
        self, tool: str, args: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Call ``tool`` (bare or ``<plugin>.<tool>``) and return what a caller would get."""
        t = self._tool(tool)
        ctx = self._context(t, timeout)
        if t.is_stream:
            coro: Any = self._collect(t, args, ctx)
        else:
            coro = invoke(t, args, ctx, self._executor)
        # The tool runs in its own task, as in a worker: on a deadline or a cancel the
        # context is marked cancelled first, then the task is cancelled.
        inner: asyncio.Future[Any] = asyncio.ensure_future(coro)
        try:
            async with asyncio.timeout(timeout):
                value = await asyncio.shield(inner)
        except TimeoutError:
            await self._stop(inner, ctx)
            raise self._timeout_error(t, timeout or 0.0) from None
        except asyncio.CancelledError:
            await self._stop(inner, ctx)
            raise
        return _over_the_wire(value)

    async def _collect(self, t: Tool, args: dict[str, Any] | None, ctx: Context) -> list[Any]:
        return [item async for item in iterate(t, args, ctx, self._executor)]

    @staticmethod
    async def _stop(inner: asyncio.Future[Any], ctx: Context) -> None:
        ctx._cancel()
        inner.cancel()
        with contextlib.suppress(BaseException):
            await inner

    async def astream(
        self, tool: str, args: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> AsyncGenerator[Any, None]:
        """Yield a streaming tool's items; leaving the loop early closes its generator."""
        t = self._tool(tool)
        ctx = self._context(t, timeout)
        agen = iterate(t, args, ctx, self._executor)
        try:
            while True:
                try:
                    async with asyncio.timeout_at(ctx.deadline):
                        item = await agen.__anext__()
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    ctx._cancel()
                    raise self._timeout_error(t, timeout or 0.0) from None
                yield _over_the_wire(item)
        finally:
            ctx._cancel()
            await agen.aclose()

    def call(
        self, tool: str, args: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Synchronous :meth:`acall`, for plain test functions (not inside an event loop)."""
        return asyncio.run(self.acall(tool, args, timeout=timeout))

    def stream(
        self,
        tool: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        limit: int | None = None,
    ) -> list[Any]:
        """The items of a streaming tool as a list; ``limit`` stops (and closes) it early."""

        async def collect() -> list[Any]:
            out: list[Any] = []
            if limit is not None and limit <= 0:
                return out
            agen = self.astream(tool, args, timeout=timeout)
            try:
                async for item in agen:
                    out.append(item)
                    if limit is not None and len(out) >= limit:
                        break
            finally:
                await agen.aclose()
            return out

        return asyncio.run(collect())

    # -- resources, prompts, completions ---------------------------------------------
    async def _feature(
        self, kind: str, target: str, args: dict[str, Any], timeout: float | None
    ) -> dict[str, Any]:
        self._ids += 1
        ctx = Context(
            call_id=self._ids,
            plugin=self.plugin.name,
            tool=target,
            data_dir=self.data_dir,
            sink=self,
            deadline=time.monotonic() + timeout if timeout is not None else None,
        )
        inner = asyncio.ensure_future(
            run_feature(self.plugin, kind, target, args, ctx, self._executor)
        )
        try:
            async with asyncio.timeout(timeout):
                value = await asyncio.shield(inner)
        except TimeoutError:
            await self._stop(inner, ctx)
            raise ToolTimeout(
                f"{self.plugin.name} {kind} {target} did not finish within {timeout:g}s"
            ) from None
        result: dict[str, Any] = _over_the_wire(value)
        return result

    def read_resource(self, uri: str, *, timeout: float | None = None) -> dict[str, Any]:
        """``resources/read`` of ``uri``: ``{"contents": [{"uri", "text" | "blob", ...}]}``."""
        result: dict[str, Any] = asyncio.run(self._feature("resource", uri, {}, timeout))
        return contents_to_mcp(result)

    def get_prompt(
        self, name: str, arguments: dict[str, str] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """``prompts/get`` of prompt ``name`` (bare or ``<plugin>.<name>``): its messages."""
        short = name.removeprefix(f"{self.plugin.name}.")
        return asyncio.run(self._feature("prompt", short, dict(arguments or {}), timeout))

    def complete(
        self,
        ref: str,
        argument: str,
        value: str = "",
        arguments: dict[str, str] | None = None,
    ) -> list[str]:
        """The values the completion handler of ``argument`` of prompt or template
        ``ref`` suggests for ``value``."""
        kind = "uri" if "://" in ref else "name"
        args = {
            "ref": {kind: ref},
            "argument": {"name": argument, "value": value},
            "context": {"arguments": dict(arguments or {})},
        }
        result = asyncio.run(self._feature("complete", "", args, None))
        values: list[str] = result["completion"]["values"]
        return values


class WorkerTester:
    """A plugin served by a real :class:`~mcphost.host.Host` through a worker process.

    Tool names may be bare (``"upper"``) or full (``"textkit.upper"``). ``logs`` and
    ``progress`` collect what the worker's tools report.
    """

    def __init__(self, host: Host, name: str) -> None:
        self.host = host
        self.name = name
        self.logs: list[LogLine] = []
        self.progress: list[ProgressReport] = []

    def _full(self, tool: str) -> str:
        return tool if "." in tool else f"{self.name}.{tool}"

    def _on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append(ProgressReport(progress, total, message, 0))

    @property
    def pid(self) -> int | None:
        """The process id of the plugin's running worker, if one runs."""
        for stats in self.host.stats():
            if stats["plugin"] == self.name:
                pid = stats.get("pid")
                return int(pid) if pid is not None else None
        return None

    async def call(
        self, tool: str, args: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        return await self.host.call(
            self._full(tool), args, timeout=timeout, on_progress=self._on_progress
        )

    async def stream(
        self,
        tool: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        window: int | None = None,
    ) -> AsyncIterator[Any]:
        async for item in self.host.stream(
            self._full(tool), args, timeout=timeout, window=window, on_progress=self._on_progress
        ):
            yield item


def _locate(
    plugin: Plugin | str, paths: Sequence[str | os.PathLike[str]]
) -> tuple[str, list[str], str | None]:
    """The entry point (``module:attr``), the sys.path roots and, if known, the name."""
    if isinstance(plugin, Plugin):
        # The module that defines the tools usually holds the plugin too; its globals
        # are reachable from any tool function even if it left sys.modules.
        namespaces = [getattr(t.fn, "__globals__", {}) for t in plugin.tools.values()]
        namespaces += [vars(m) for m in list(sys.modules.values()) if isinstance(m, ModuleType)]
        for ns in namespaces:
            module_name, file = ns.get("__name__"), ns.get("__file__")
            if not module_name or module_name == "__main__" or not file:
                continue
            attr = next((k for k, v in ns.items() if v is plugin), None)
            if attr is None:
                continue
            path = Path(str(file)).resolve()
            depth = module_name.count(".") + (1 if path.name == "__init__.py" else 0)
            root = path.parents[depth]
            return f"{module_name}:{attr}", [str(root), *map(str, paths)], plugin.name
        raise ValueError(
            f"plugin {plugin.name} is not a global of any imported module file; "
            "define it at module level, or pass 'module:attr' and paths="
        )
    ref = Path(plugin)
    if plugin.endswith(".py") or (ref.is_dir() and (ref / "__init__.py").exists()):
        ref = ref.resolve()
        module = ref.stem if ref.suffix == ".py" else ref.name
        return f"{module}:plugin", [str(ref.parent), *map(str, paths)], None
    entry = plugin if ":" in plugin else f"{plugin}:plugin"
    return entry, [str(Path(p).resolve()) for p in paths], None


def _plugin_name(entry: str, paths: list[str]) -> str:
    """Import the plugin in this (test) process to read its name."""
    module_name, _, attr = entry.partition(":")
    added = [p for p in paths if p not in sys.path]
    sys.path[:0] = added
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    finally:
        for p in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(p)
    if not isinstance(obj, Plugin):
        raise TypeError(f"{entry} is a {type(obj).__name__}, not an mcphost.sdk.Plugin")
    return obj.name


@contextlib.asynccontextmanager
async def run_in_worker(
    plugin: Plugin | str,
    *,
    paths: Sequence[str | os.PathLike[str]] = (),
    name: str | None = None,
    version: str = "0.0.0",
    home: str | os.PathLike[str] | None = None,
    config: HostConfig | None = None,
    isolation: str | None = None,
    hooks: Sequence[object] = (),
    sampling_handler: Any = None,
    elicitation_handler: Any = None,
) -> AsyncIterator[WorkerTester]:
    """Serve ``plugin`` through a real Host and worker process for the ``async with`` body.

    ``plugin`` is a :class:`Plugin` defined at module level, ``"module:attr"`` (or
    ``"module"`` for ``module:plugin``) importable from ``paths``, or the path of a
    ``.py`` file or package directory holding a global ``plugin``. The host runs with a
    temporary home (unless ``home`` is given) and a configuration that allows the
    unsigned plugin (unless ``config`` is given); every worker is stopped on exit.
    ``sampling_handler`` and ``elicitation_handler`` (async functions from the MCP
    request's params to its result) answer the tools' ``ctx.sample`` and ``ctx.elicit``.
    """
    from mcphost.host import Host, HostConfig, PluginSource

    entry, roots, known = _locate(plugin, paths)
    plugin_name = name or known or _plugin_name(entry, roots)
    source = PluginSource(
        name=plugin_name,
        version=version,
        entry=entry,
        paths=roots,
        origin="directory",
        root=roots[0] if roots else "",
    )
    with contextlib.ExitStack() as stack:
        if home is None:
            home = stack.enter_context(tempfile.TemporaryDirectory(prefix="mcphost-home-"))
        host = Host(
            Path(home),
            config=config or HostConfig(allow_unsigned=True),
            sources=[source],
            environment=False,
            registry=False,
            hooks=hooks,
            isolation=isolation,
            sampling_handler=sampling_handler,
            elicitation_handler=elicitation_handler,
        )
        tester = WorkerTester(host, plugin_name)

        def capture(event: Any) -> None:
            if event.kind == "log" and event.plugin == plugin_name:
                tester.logs.append(LogLine(event.level, event.message, event.call_id))

        host.add_listener(capture)
        async with host:
            if not any(t.plugin == plugin_name for t in host.tools()):
                why = next(
                    (s.get("failure") for s in host.stats() if s["plugin"] == plugin_name), None
                )
                raise PluginFailed(
                    f"plugin {plugin_name} ({entry} from {', '.join(roots)}) did not start "
                    f"in a worker: {why or 'it offers no tools'}; its output is in the log"
                )
            yield tester
