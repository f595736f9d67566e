"""Coalescing concurrent calls to one batch tool into batch calls, on the event loop.

A batch tool takes a list (its batch parameter) and returns a list of the same length.
Callers call it as usual, each with its own list (often of one item); the batcher joins
the lists of calls that agree on every other argument, makes one call to the worker,
and hands each caller its own slice of the result. The rules of which calls go
together and when are :class:`~.former.BatchFormer`'s; the sizes come from
:class:`~.model.LatencyModel`. A call that finds nothing queued and no batch of its tool
in flight goes at once on the caller's own task: at low load batching costs nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mcphost.sdk.errors import Busy, MCPHostError, PluginError, ToolTimeout

from .former import Batch, BatchFormer, FormerSettings, Pending
from .model import LatencyModel

__all__ = ["BatchStats", "ToolBatcher", "batch_parameter"]

#: ``dispatch(args, timeout)``: one call to the tool on a worker.
Dispatch = Callable[[dict[str, Any], float], Awaitable[Any]]

_ids = itertools.count(1)


def batch_parameter(input_schema: dict[str, Any]) -> str | None:
    """The batch tool's list parameter: its one required parameter of array type."""
    props = input_schema.get("properties") or {}
    required = set(input_schema.get("required") or ())
    arrays = [
        name
        for name, schema in props.items()
        if isinstance(schema, dict) and schema.get("type") == "array" and name in required
    ]
    return arrays[0] if len(arrays) == 1 else None


class BatchStats:
    """Counts of one batcher, for status and metrics."""

    __slots__ = ("batches", "calls", "items", "reasons", "rejected")

    def __init__(self) -> None:
        self.calls = 0
        self.batches = 0
        self.items = 0
        self.reasons: dict[str, int] = {"alone": 0, "idle": 0, "size": 0, "deadline": 0}
        self.rejected: dict[str, int] = {}


class _Waiting(Pending):
    """A queued call and what its caller waits on."""

    future: asyncio.Future[Any]
    args: dict[str, Any]
    count: int


class ToolBatcher:
    """The batcher of one batch tool (``plugin.tool``)."""

    def __init__(
        self,
        tool: str,
        param: str,
        dispatch: Dispatch,
        settings: FormerSettings | None = None,
        *,
        target_latency: float | None = None,
        max_in_flight: int = 1,
    ) -> None:
        self.tool = tool
        self.param = param
        self._dispatch = dispatch
        self.former = BatchFormer(settings)
        self.model = LatencyModel(self.former.settings.max_batch_size)
        self.target_latency = target_latency
        #: Batches of this tool running at once: with none running a call goes at once;
        #: with some, a group goes when full or after ``max_queue_delay``; at this many,
        #: calls wait for one to end.
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.stats = BatchStats()
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._shut = False

    @property
    def busy(self) -> bool:
        """Calls queued or batches running."""
        return bool(self.in_flight or len(self.former))

    # -- the caller's side ---------------------------------------------------------
    async def call(self, args: dict[str, Any], timeout: float, priority: int = 1) -> Any:
        """Run the tool for ``args`` (its batch parameter a list), maybe with others."""
        items = args.get(self.param)
        if not isinstance(items, list):
            return await self._dispatch(args, timeout)  # the worker says what is wrong
        if self._shut:
            raise self._closed_error()
        self.stats.calls += 1
        if not self.in_flight and not len(self.former):
            return await self._alone(args, len(items), timeout)
        now = self._loop.time()
        rest = {k: v for k, v in args.items() if k != self.param}
        key = json.dumps(rest, sort_keys=True, default=str) if rest else None
        p = _Waiting(id=next(_ids), level=priority, enqueued=now, deadline=now + timeout, key=key)
        p.future = self._loop.create_future()
        p.args, p.count = args, len(items)
        refused = self.former.submit(p, now)
        if refused is not None:
            self.stats.rejected[refused] = self.stats.rejected.get(refused, 0) + 1
            raise Busy(
                f"{self.tool}: the batch queue of priority {p.level} is full "
                f"({self.former.queued(p.level)} calls wait); try again later, or raise "
                "batching.max_queue_size",
                data={"tool": self.tool, "priority": p.level, "reason": refused},
            )
        self._kick()
        try:
            return await p.future
        except asyncio.CancelledError:
            if self.former.cancel(p.id):
                self._kick()
            raise

    async def _alone(self, args: dict[str, Any], n: int, timeout: float) -> Any:
        self.in_flight += 1
        self.stats.reasons["alone"] += 1
        t0 = time.perf_counter()
        try:
            result = await self._dispatch(args, timeout)
        finally:
            self.in_flight -= 1
            if len(self.former):
                self._kick()
        self._observe(n, time.perf_counter() - t0)
        if not isinstance(result, list) or len(result) != n:
            raise self._miscounted(result, n)
        return result

    def _miscounted(self, result: Any, n: int) -> PluginError:
        got = f"{len(result)} results" if isinstance(result, list) else type(result).__name__
        return PluginError(
            f"{self.tool} is a batch tool and returned {got} for {n} items; a batch tool "
            "must return one result per item, in order",
            data={"tool": self.tool},
        )

    # -- forming and sending batches ----------------------------------------------
    def _kick(self) -> None:
        if self._shut:
            return
        now = self._loop.time()
        for p, why in self.former.expire(now):
            self._refuse(p, why)  # type: ignore[arg-type]
        limit = self.model.size_for(self.target_latency)
        # No batch running: what waits goes at once. Some running, with room for more:
        # a group goes once full or once its first call has waited long enough. No room:
        # calls wait here, in priority order, for a running batch to end.
        while self.in_flight < self.max_in_flight:
            batch = self.former.take(
                now, idle=self.in_flight == 0, limit=limit, expect=self._expect
            )
            if batch is None:
                break
            self.in_flight += 1
            task = self._loop.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.former.wakeup(self._expect, limit)
        if when is not None:
            self._timer = self._loop.call_at(when, self._kick)

    def _expect(self, n: int) -> float:
        return self.model.predict(n)

    def _refuse(self, p: _Waiting, why: str) -> None:
        self.stats.rejected[why] = self.stats.rejected.get(why, 0) + 1
        if p.future.done():
            return
        if why == "deadline":
            p.future.set_exception(
                ToolTimeout(
                    f"{self.tool}: the call's time ran out while it waited for a batch",
                    data={"tool": self.tool},
                )
            )
        else:
            p.future.set_exception(
                Busy(
                    f"{self.tool}: the call waited its priority's queue timeout out before a "
                    "batch took it; try again later",
                    data={"tool": self.tool, "priority": p.level, "reason": why},
                )
            )

    async def _run(self, batch: Batch) -> None:
        calls: list[_Waiting] = batch.items  # type: ignore[assignment]
        self.stats.batches += 1
        self.stats.reasons[batch.reason] += 1
        joined: list[Any] = []
        for p in calls:
            joined.extend(p.args[self.param])
        args = {**calls[0].args, self.param: joined}
        timeout = max(p.deadline for p in calls) - self._loop.time()
        t0 = time.perf_counter()
        try:
            if timeout <= 0:
                raise ToolTimeout(f"{self.tool}: the batch's time ran out before it left")
            result = await self._dispatch(args, timeout)
        except asyncio.CancelledError:
            for p in calls:
                if not p.future.done():
                    p.future.cancel()
            raise
        except MCPHostError as exc:
            for p in calls:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        except Exception as exc:  # a bug below: every caller learns of it
            for p in calls:
                if not p.future.done():
                    p.future.set_exception(PluginError(f"{self.tool}: batch failed: {exc!r}"))
            return
        finally:
            self.in_flight -= 1
            self._kick()
        self._observe(len(joined), time.perf_counter() - t0)
        if not isinstance(result, list) or len(result) != len(joined):
            error = self._miscounted(result, len(joined))
            for p in calls:
                if not p.future.done():
                    p.future.set_exception(error)
            return
        self.stats.items += len(joined)
        offset = 0
        for p in calls:
            part = result[offset : offset + p.count]
            offset += p.count
            if not p.future.done():
                p.future.set_result(part)

    def _observe(self, n: int, seconds: float) -> None:
        self.model.observe(n, seconds, self.target_latency)

    def shut(self) -> None:
        """Take no more calls; the queued ones fail (the host is closing). Batches
        running end as their workers answer or stop."""
        self._shut = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for p, _ in self.former.expire(float("inf")):
            w: _Waiting = p  # type: ignore[assignment]
            if not w.future.done():
                w.future.set_exception(self._closed_error())

    def _closed_error(self) -> PluginError:
        return PluginError(
            f"{self.tool}: the host closed before the call was sent to a worker",
            data={"tool": self.tool},
        )

    async def close(self) -> None:
        """:meth:`shut`, then wait for the batches running."""
        self.shut()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
