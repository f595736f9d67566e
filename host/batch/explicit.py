"""Explicit batches: many items of one tool at once, each answered on its own.

``Host.batch(tool, items)`` runs one call per item, concurrently, and returns the
outcomes in input order, each with its id (its position) and status. For a batch tool
an item is one element of its list parameter (``args`` gives the other arguments), so
the batcher packs the items into batch calls as it packs any concurrent calls; for any
other tool an item is the arguments of one call. An optional reducer turns the
successful results into one aggregate: a built-in (``sum``, ``mean``, ``concat``,
``merge``, ``count``) or another tool, called with the list of results.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from mcphost.sdk.errors import InvalidArguments, MCPHostError

from .batcher import batch_parameter

if TYPE_CHECKING:
    from ..host import Host

__all__ = ["REDUCERS", "BatchOutcome", "ItemOutcome", "run_batch"]


class ItemOutcome(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One item's answer: ``ok`` with its ``result``, or not with its ``error``
    (``{code, message, data}``)."""

    id: int
    ok: bool
    result: Any = None
    error: dict[str, Any] | None = None


class BatchOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """Every item's outcome in input order, and the aggregate when one was asked for."""

    items: list[ItemOutcome]
    succeeded: int
    failed: int
    aggregate: Any = None


def _sum(results: list[Any]) -> Any:
    return sum(results)


def _mean(results: list[Any]) -> Any:
    return sum(results) / len(results) if results else math.nan


def _concat(results: list[Any]) -> Any:
    out: list[Any] = []
    for r in results:
        out.extend(r if isinstance(r, list) else [r])
    return out


def _merge(results: list[Any]) -> Any:
    out: dict[str, Any] = {}
    for r in results:
        if not isinstance(r, dict):
            raise TypeError(f"merge takes objects, and a result is {type(r).__name__}")
        out.update(r)
    return out


def _count(results: list[Any]) -> Any:
    return len(results)


#: The built-in reducers, by name.
REDUCERS = {"sum": _sum, "mean": _mean, "concat": _concat, "merge": _merge, "count": _count}


async def run_batch(
    host: Host,
    name: str,
    items: Iterable[Any],
    *,
    args: dict[str, Any] | None = None,
    priority: int | None = None,
    timeout: float | None = None,
    reduce: str | None = None,
    max_concurrency: int = 256,
) -> BatchOutcome:
    """See :meth:`mcphost.host.Host.batch`."""
    info = {t.name: t for t in host.tools()}.get(name)
    if info is None:
        host._route(name)  # raises the error that says what exists
        raise InvalidArguments(f"{name} is not a tool this host knows")  # pragma: no cover
    if info.kind == "stream":
        raise InvalidArguments(f"{name} is a streaming tool; a batch takes call tools")
    if max_concurrency < 1:
        raise InvalidArguments("max_concurrency must be at least 1")
    if reduce is not None and reduce not in REDUCERS and "." not in reduce:
        raise InvalidArguments(
            f"unknown reducer {reduce!r}: use one of {', '.join(REDUCERS)}, or a tool name "
            "(<plugin>.<tool>) that takes the list of results"
        )
    items = list(items)
    param = batch_parameter(info.input_schema) if info.batch else None
    common = dict(args or {})
    calls: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if param is not None:
            calls.append({**common, param: [item]})
        elif isinstance(item, dict):
            calls.append({**common, **item})
        else:
            raise InvalidArguments(
                f"item {i} of the batch for {name} is {type(item).__name__}; {name} is not "
                "a batch tool, so each item must be an object of its arguments",
                data={"item": i},
            )
    gate = asyncio.Semaphore(max_concurrency)

    async def one(i: int, call_args: dict[str, Any]) -> ItemOutcome:
        async with gate:
            try:
                value = await host.call(name, call_args, timeout=timeout, priority=priority)
            except MCPHostError as exc:
                return ItemOutcome(id=i, ok=False, error=exc.to_dict())
        return ItemOutcome(id=i, ok=True, result=value[0] if param is not None else value)

    outcomes = list(await asyncio.gather(*(one(i, a) for i, a in enumerate(calls))))
    ok = [o.result for o in outcomes if o.ok]
    aggregate: Any = None
    if reduce is not None:
        if reduce in REDUCERS:
            try:
                aggregate = REDUCERS[reduce](ok)
            except TypeError as exc:
                raise InvalidArguments(
                    f"the reducer {reduce!r} cannot combine these results: {exc}"
                ) from None
        else:
            aggregate = await _reduce_with_tool(host, reduce, ok, timeout)
    return BatchOutcome(
        items=outcomes, succeeded=len(ok), failed=len(outcomes) - len(ok), aggregate=aggregate
    )


async def _reduce_with_tool(
    host: Host, name: str, results: list[Any], timeout: float | None
) -> Any:
    info = {t.name: t for t in host.tools()}.get(name)
    if info is None:
        host._route(name)  # raises the error that says what exists
    assert info is not None
    param = batch_parameter(info.input_schema)
    if param is None:
        raise InvalidArguments(
            f"the reducer tool {name} must take the results as its one required list parameter"
        )
    return await host.call(name, {param: results}, timeout=timeout)
