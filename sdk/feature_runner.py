"""Run a plugin's resource read, prompt or completion from async code and answer with
MCP's result object. The worker (a ``call`` frame of kind "resource", "prompt" or
"complete", on its loop; a sync function on its thread pool) and
:mod:`mcphost.sdk.testing` share this, as they share :mod:`.runner` for tools."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from .context import Context
from .errors import (
    InvalidArguments,
    MCPHostError,
    ResourceNotFound,
    ToolError,
    ToolNotFound,
)
from .features import (
    completion_result,
    prompt_result,
    resource_contents,
    string_arguments,
)
from .plugin import Plugin

__all__ = ["run_feature"]


async def _run(
    fn: Callable[..., Any], kind: str, kwargs: dict[str, Any], where: str, executor: Executor
) -> Any:
    try:
        if kind == "async":
            return await fn(**kwargs)
        run = contextvars.copy_context().run
        return await asyncio.get_running_loop().run_in_executor(executor, lambda: run(fn, **kwargs))
    except MCPHostError:
        raise
    except Exception as exc:
        raise ToolError(
            f"{where} raised {type(exc).__name__}: {exc}",
            code="tool_exception",
            data={"exception": type(exc).__name__},
        ) from exc


async def run_feature(
    plugin: Plugin,
    kind: str,
    target: str,
    args: dict[str, Any],
    ctx: Context,
    executor: Executor,
) -> Any:
    """Read resource ``target`` (kind "resource"), fill in prompt ``target`` with
    ``args`` ("prompt"), or complete the argument ``args`` names ("complete", ``args``
    holding MCP's ``ref``, ``argument`` and ``context``); MCP's result object."""
    if kind == "resource":
        return await _read(plugin, target, ctx, executor)
    if kind == "prompt":
        return await _prompt(plugin, target, args, ctx, executor)
    if kind == "complete":
        return await _complete(plugin, args, ctx, executor)
    raise InvalidArguments(f"this worker does not serve calls of kind {kind!r}")


async def _read(plugin: Plugin, uri: str, ctx: Context, executor: Executor) -> Any:
    res = plugin.resources.get(uri)
    variables: dict[str, str] = {}
    if res is None or res.template is not None:
        res = None
        for candidate in plugin.resources.values():
            if candidate.template is not None:
                found = candidate.template.match(uri)
                if found is not None:
                    res, variables = candidate, found
                    break
    if res is None:
        raise ResourceNotFound(f"plugin {plugin.name} has no resource {uri!r}", data={"uri": uri})
    where = f"{plugin.name} resource {res.uri}"
    kwargs = res.signature.bind(
        where,
        variables,
        see=f"each variable of {res.uri} takes the type its function declares "
        "(resources/templates/list shows the templates)",
    )
    if res.signature.context_param is not None:
        kwargs[res.signature.context_param] = ctx
    value = await _run(res.fn, res.kind, kwargs, where, executor)
    return resource_contents(uri, value, res.mime_type, where)


async def _prompt(
    plugin: Plugin, name: str, args: dict[str, Any], ctx: Context, executor: Executor
) -> Any:
    prompt = plugin.prompts.get(name)
    if prompt is None:
        raise ToolNotFound(
            f"plugin {plugin.name} has no prompt {name!r}; it has: "
            + (", ".join(sorted(plugin.prompts)) or "none"),
            data={"prompt": name},
        )
    where = f"{plugin.name}.{name}"
    # MCP sends prompt arguments as strings: converted (not strictly) to the hints.
    kwargs = prompt.signature.bind(
        where,
        args,
        see="prompts/list shows the prompt's arguments (each given as a string, "
        "converted to the type the prompt declares)",
    )
    if prompt.signature.context_param is not None:
        kwargs[prompt.signature.context_param] = ctx
    value = await _run(prompt.fn, prompt.kind, kwargs, where, executor)
    return prompt_result(value, prompt.description, where)


async def _complete(plugin: Plugin, args: dict[str, Any], ctx: Context, executor: Executor) -> Any:
    ref = args.get("ref") if isinstance(args.get("ref"), dict) else {}
    argument = args.get("argument") if isinstance(args.get("argument"), dict) else {}
    assert isinstance(ref, dict) and isinstance(argument, dict)
    key = str(ref.get("name") or ref.get("uri") or "")
    arg_name = str(argument.get("name", ""))
    value = argument.get("value", "")
    handler = plugin.completions.get((key, arg_name))
    if handler is None:
        # Nothing to suggest is an answer, not an error (as MCP's servers do).
        return completion_result([], "")
    where = f"{plugin.name} completion of {arg_name} for {key}"
    context = args.get("context") if isinstance(args.get("context"), dict) else {}
    assert isinstance(context, dict)
    known = string_arguments(context.get("arguments"), where)
    kwargs = handler.kwargs(str(value), known, ctx)
    values = await _run(handler.fn, handler.kind, kwargs, where, executor)
    return completion_result(values, where)
