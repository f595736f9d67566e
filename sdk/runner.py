"""Run a tool of any kind (sync, async, generator, async generator) from async code.

The worker and :mod:`mcphost.sdk.testing` share this, so a tool behaves the same in a
unit test as in a sandboxed worker.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import Executor
from typing import Any

import msgspec

from .content import is_content
from .content import to_wire as content_to_wire
from .context import Context
from .errors import BatchResults, MCPHostError, ToolError
from .models import dump_model
from .plugin import Tool

__all__ = ["batch_to_wire", "invoke", "iterate", "to_wire"]

_STOP = object()
#: Values that are plain data already (exactly these types, not subclasses).
_PLAIN = frozenset({str, int, float, bool, type(None)})


def to_wire(value: Any, tool: str) -> Any:
    """Convert a tool's return value to plain JSON-compatible data."""
    if type(value) in _PLAIN:
        return value
    if is_content(value):
        return content_to_wire(value, dump_model)
    try:
        return msgspec.to_builtins(value, str_keys=True, enc_hook=dump_model)
    except TypeError as exc:
        raise ToolError(
            f"{tool}: returned a value that cannot be sent as JSON ({exc}); return "
            "str, int, float, bool, None, lists, dicts, dataclasses, msgspec Structs or "
            "pydantic models",
            code="bad_result",
        ) from None


def batch_to_wire(value: Any, tool: str) -> Any:
    """A batch tool's return value as plain data, and its failed items.

    A batch tool returns one result per item; an item that failed on its own is an
    exception in that place (``ToolError("...", code=...)``, or any exception, which
    becomes ``tool_exception``). When there is one, the answer is a
    :class:`~.errors.BatchResults`: None in the failed places, their errors by index.
    """
    if type(value) is not list or not any(isinstance(v, BaseException) for v in value):
        return to_wire(value, tool)
    errors: dict[int, tuple[str, str, dict[str, Any]]] = {}
    values: list[Any] = []
    for i, v in enumerate(value):
        if isinstance(v, MCPHostError):
            errors[i] = (v.code, v.message, to_wire(v.data, tool))
            v = None
        elif isinstance(v, Exception):
            errors[i] = (
                "tool_exception",
                f"{tool} failed on item {i}: {type(v).__name__}: {v}",
                {"exception": type(v).__name__},
            )
            v = None
        elif isinstance(v, BaseException):
            raise ToolError(
                f"{tool}: item {i} is a {type(v).__name__}; a batch tool's failed item "
                "must be an Exception (ToolError for a code of its own)",
                code="bad_result",
            )
        values.append(v)
    return BatchResults(to_wire(values, tool), errors)


async def invoke(tool: Tool, args: dict[str, Any] | None, ctx: Context, executor: Executor) -> Any:
    """Call a non-streaming tool and return its result as plain data."""
    kwargs = tool.bind(args, ctx)
    name = f"{ctx.plugin}.{tool.name}"
    try:
        if tool.kind == "async":
            value = await tool.fn(**kwargs)
        else:
            loop = asyncio.get_running_loop()
            run = contextvars.copy_context().run

            def timed() -> Any:
                t0 = time.perf_counter()
                try:
                    return run(tool.fn, **kwargs)
                finally:
                    ctx.run_seconds = time.perf_counter() - t0

            value = await loop.run_in_executor(executor, timed)
    except MCPHostError:
        raise
    except Exception as exc:
        raise ToolError(
            f"{name} raised {type(exc).__name__}: {exc}",
            code="tool_exception",
            data={"exception": type(exc).__name__},
        ) from exc
    return batch_to_wire(value, name) if tool.batch else to_wire(value, name)


async def iterate(
    tool: Tool, args: dict[str, Any] | None, ctx: Context, executor: Executor
) -> AsyncGenerator[Any, None]:
    """Drive a streaming tool; closing this iterator closes the tool's generator."""
    kwargs = tool.bind(args, ctx)
    name = f"{ctx.plugin}.{tool.name}"
    if tool.kind == "async_gen":
        agen = tool.fn(**kwargs)
        try:
            while True:
                try:
                    item = await agen.__anext__()
                except StopAsyncIteration:
                    return
                except MCPHostError:
                    raise
                except Exception as exc:
                    raise ToolError(
                        f"{name} raised {type(exc).__name__}: {exc}", code="tool_exception"
                    ) from exc
                yield to_wire(item, name)
        finally:
            await agen.aclose()
    elif tool.kind == "sync_gen":
        gen: Iterator[Any] = tool.fn(**kwargs)
        loop = asyncio.get_running_loop()

        def step() -> Any:
            return next(gen, _STOP)

        try:
            while True:
                try:
                    item = await loop.run_in_executor(executor, step)
                except MCPHostError:
                    raise
                except Exception as exc:
                    raise ToolError(
                        f"{name} raised {type(exc).__name__}: {exc}", code="tool_exception"
                    ) from exc
                if item is _STOP:
                    return
                yield to_wire(item, name)
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                await loop.run_in_executor(executor, close)
    else:
        # A plain tool called as a stream yields its one result.
        yield await invoke(tool, args, ctx, executor)
