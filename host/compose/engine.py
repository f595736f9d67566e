"""The dataflow engine: a step starts as soon as the steps it needs have finished.

Scheduling follows :class:`graphlib.TopologicalSorter` (``get_ready()``/``done()``), not
levels: a slow step holds back only the steps that read it. Each step is an ordinary
``Host.call``, so routing, hooks, metrics and tracing apply to it unchanged. Leaving
(a failure, the deadline, the caller cancelling) cancels every step in flight.
"""

from __future__ import annotations

import asyncio
import contextvars
import graphlib
import json
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from mcphost.sandbox.client import CallLogCallback, ProgressCallback
from mcphost.sdk.errors import CompositionFailed, MCPHostError, ToolTimeout

from .expr import Condition, ExpressionError, compile_condition
from .model import Composition, Step
from .refs import Ref, RefError, compile_value, resolve
from .validate import default_output, dependencies

__all__ = ["Plan", "Run", "StepCaller", "StepRecord"]

#: How deep compositions may call compositions.
MAX_DEPTH = 8
_DEPTH: contextvars.ContextVar[int] = contextvars.ContextVar("mcphost_compose_depth", default=0)


class StepCaller(Protocol):
    """What the engine needs of the host: an ordinary call."""

    async def call(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        on_log: CallLogCallback | None = None,
    ) -> Any: ...


class StepRecord(msgspec.Struct, kw_only=True):
    """How one step went: for errors, ``--trace`` and metrics."""

    id: str
    tool: str
    status: str = "pending"  # ok, skipped, failed (tolerated), error
    attempts: int = 0
    retries: int = 0
    start: float = 0.0
    duration: float = 0.0
    items: int = 0
    failed_items: int = 0
    error: str = ""


class Plan:
    """A composition made ready to run: references parsed, the graph built, conditions
    compiled once (on first use, so loading a composition imports no expression
    library)."""

    def __init__(self, comp: Composition) -> None:
        self.comp = comp
        self.name = comp.name
        self.steps = {s.id: s for s in comp.steps}
        self.graph = {sid: need & self.steps.keys() for sid, need in dependencies(comp).items()}
        self.args = {s.id: compile_value(s.args) for s in comp.steps}
        self.items: dict[str, Ref] = {}
        for s in comp.steps:
            if s.for_each is not None:
                items = compile_value(s.for_each.items)
                if isinstance(items, Ref):
                    self.items[s.id] = items
        self.output = compile_value(default_output(comp))
        self._conditions: dict[str, Condition] = {}
        #: The steps in order when each needs the one before it (a pipeline): no two can
        #: ever be ready at once, so a run walks them without a scheduler.
        self.chain: list[str] | None = None
        try:
            order = list(graphlib.TopologicalSorter(self.graph).static_order())
        except graphlib.CycleError:
            return  # refused by validation; a run reports the cycle
        if all(order[i - 1] in self.graph[order[i]] for i in range(1, len(order))):
            self.chain = order

    def condition(self, step: Step) -> Condition:
        cond = self._conditions.get(step.id)
        if cond is None:
            assert step.when is not None
            cond = self._conditions[step.id] = compile_condition(step.when)
        return cond


class _StepFailed(Exception):
    def __init__(self, step: Step, attempt: int, args: Any, error: MCPHostError) -> None:
        super().__init__(error.message)
        self.step = step
        self.attempt = attempt
        self.input = args
        self.error = error


def _short(value: Any, limit: int = 200) -> str:
    try:
        text = json.dumps(value, default=str, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Run:
    """One run of a plan. ``records`` tells how each step went (also after a failure)."""

    def __init__(
        self,
        plan: Plan,
        caller: StepCaller,
        input: dict[str, Any],
        *,
        timeout: float | None = None,
        call_timeout: float = 60.0,
        on_progress: ProgressCallback | None = None,
        on_log: CallLogCallback | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.plan = plan
        self.caller = caller
        self.input = input
        self.outputs: dict[str, Any] = {}
        self.records: dict[str, StepRecord] = {}
        self.call_timeout = call_timeout
        self.on_progress = on_progress
        self.on_log = on_log
        self.rand = rand
        seconds = plan.comp.deadline if timeout is None else min(timeout, plan.comp.deadline)
        self.seconds = seconds
        self.t0 = time.perf_counter()
        self.deadline = 0.0  # set when the run starts
        self.outcome = "pending"

    # -- the whole run ---------------------------------------------------------------
    async def run(self) -> Any:
        depth = _DEPTH.get()
        if depth >= MAX_DEPTH:
            raise CompositionFailed(
                f"composition {self.plan.name}: compositions call each other more than "
                f"{MAX_DEPTH} deep; is there a loop between them?",
                data={"composition": self.plan.name, "reason": "depth"},
            )
        token = _DEPTH.set(depth + 1)
        self.t0 = time.perf_counter()
        self.deadline = asyncio.get_running_loop().time() + self.seconds
        self.outcome = "running"
        try:
            async with asyncio.timeout_at(self.deadline):
                await self._schedule()
            result = resolve(self.plan.output, self.input, self.outputs)
        except _StepFailed as exc:
            self.outcome = "failed"
            raise self._failure(exc) from None
        except TimeoutError:
            self.outcome = "timeout"
            running = [r.id for r in self.records.values() if r.status in ("running", "cancelled")]
            raise CompositionFailed(
                f"composition {self.plan.name} ran past its deadline of {self.seconds:g}s; "
                f"steps still running: {', '.join(running) or 'none'}; earlier steps "
                f"produced: {self._produced()}",
                data={
                    "composition": self.plan.name,
                    "reason": "deadline",
                    "running": running,
                    "outputs": self._outputs_data(),
                },
            ) from None
        except asyncio.CancelledError:
            self.outcome = "cancelled"
            raise
        except RefError as exc:
            self.outcome = "failed"
            raise CompositionFailed(
                f"composition {self.plan.name}: {exc}",
                data={"composition": self.plan.name, "reason": "reference"},
            ) from None
        finally:
            _DEPTH.reset(token)
        self.outcome = "ok"
        return result

    async def _schedule(self) -> None:
        if self.plan.chain is not None:
            total = len(self.plan.chain)
            for finished, sid in enumerate(self.plan.chain, start=1):
                await self._step(self.plan.steps[sid])
                if self.on_progress is not None:
                    self._progress(finished, total, sid)
            return
        sorter = graphlib.TopologicalSorter(self.plan.graph)
        sorter.prepare()
        running: dict[asyncio.Future[None], str] = {}
        total = len(self.plan.steps)
        finished = 0
        try:
            while sorter.is_active():
                ready = sorter.get_ready()
                if len(ready) == 1 and not running:
                    # A pipeline: run the one step here, without a task of its own.
                    sid = ready[0]
                    await self._step(self.plan.steps[sid])
                    sorter.done(sid)
                    finished += 1
                    self._progress(finished, total, sid)
                    continue
                for sid in ready:
                    running[asyncio.ensure_future(self._step(self.plan.steps[sid]))] = sid
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    sid = running.pop(task)
                    task.result()
                    sorter.done(sid)
                    finished += 1
                    self._progress(finished, total, sid)
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def _progress(self, finished: int, total: int, sid: str) -> None:
        if self.on_progress is not None:
            rec = self.records[sid]
            self.on_progress(float(finished), float(total), f"step {sid}: {rec.status}")

    # -- one step --------------------------------------------------------------------
    async def _step(self, step: Step) -> None:
        rec = self.records[step.id] = StepRecord(id=step.id, tool=step.tool)
        rec.start = time.perf_counter() - self.t0
        rec.status = "running"
        try:
            if step.when is not None and not self._holds(step):
                rec.status = "skipped"
                self.outputs[step.id] = step.default
                return
            if step.for_each is not None:
                self.outputs[step.id] = await self._for_each(step, rec)
            else:
                args = resolve(self.plan.args[step.id], self.input, self.outputs)
                self.outputs[step.id] = await self._attempts(step, args, rec)
            rec.status = "ok"
        except _StepFailed as exc:
            rec.error = exc.error.code
            if step.on_error != "continue":
                rec.status = "error"
                raise
            rec.status = "failed"
            self.outputs[step.id] = step.default
        except asyncio.CancelledError:
            rec.status = "cancelled"
            raise
        finally:
            rec.duration = time.perf_counter() - self.t0 - rec.start

    def _holds(self, step: Step) -> bool:
        try:
            return self.plan.condition(step).holds(self._view())
        except ExpressionError as exc:
            raise RefError(f"step {step.id!r}, when: {exc}") from None

    async def _attempts(self, step: Step, args: Any, rec: StepRecord) -> Any:
        retry = step.retry
        most = retry.max_attempts if retry is not None else 1
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            attempt += 1
            rec.attempts += 1
            left = self.deadline - loop.time()
            timeout = min(step.timeout or self.call_timeout, left)
            try:
                if timeout <= 0:
                    raise ToolTimeout(f"no time left before the deadline for step {step.id}")
                return await self.caller.call(step.tool, args, timeout=timeout, on_log=self.on_log)
            except MCPHostError as exc:
                if retry is None or attempt >= most or not retry.retries(exc.code):
                    raise _StepFailed(step, attempt, args, exc) from None
                delay = retry.delay(attempt, self.rand())
                if loop.time() + delay >= self.deadline:
                    raise _StepFailed(step, attempt, args, exc) from None
                rec.retries += 1
                await asyncio.sleep(delay)

    async def _for_each(self, step: Step, rec: StepRecord) -> list[Any]:
        assert step.for_each is not None
        items = resolve(self.plan.items[step.id], self.input, self.outputs)
        if not isinstance(items, list):
            raise RefError(f"step {step.id}: for_each.items is not a list but {_short(items)}")
        rec.items = len(items)
        gate = asyncio.Semaphore(step.for_each.max_concurrency)
        compiled = self.plan.args[step.id]

        async def one(item: Any) -> Any:
            async with gate:
                args = resolve(compiled, self.input, self.outputs, item)
                return await self._attempts(step, args, rec)

        tasks = [asyncio.ensure_future(one(item)) for item in items]
        try:
            results = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for t in tasks:
                t.cancel()
        failures = [r for r in results if isinstance(r, _StepFailed)]
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, _StepFailed):
                raise r
        rec.failed_items = len(failures)
        if len(failures) > step.for_each.tolerated_failures:
            raise failures[0]
        return [None if isinstance(r, _StepFailed) else r for r in results]

    # -- what the run knows ----------------------------------------------------------
    def _view(self) -> dict[str, Any]:
        """What a condition sees."""
        steps = {
            sid: {"output": self.outputs.get(sid), "status": r.status, "attempts": r.attempts}
            for sid, r in self.records.items()
            if r.status not in ("running", "pending")
        }
        return {"input": self.input, "steps": steps}

    def _outputs_data(self) -> dict[str, Any]:
        return {sid: self.outputs[sid] for sid in self.outputs}

    def _produced(self) -> str:
        if not self.outputs:
            return "nothing (no step had finished)"
        return "; ".join(f"{sid} = {_short(v, 120)}" for sid, v in self.outputs.items())

    def _failure(self, exc: _StepFailed) -> CompositionFailed:
        step, err = exc.step, exc.error
        most = step.retry.max_attempts if step.retry is not None else 1
        return CompositionFailed(
            f"composition {self.plan.name} failed at step {step.id!r} ({step.tool}), attempt "
            f"{exc.attempt} of {most}: [{err.code}] {err.message}; the step's input was "
            f"{_short(exc.input)}; earlier steps produced: {self._produced()}",
            data={
                "composition": self.plan.name,
                "step": step.id,
                "tool": step.tool,
                "attempt": exc.attempt,
                "input": exc.input,
                "error": err.to_dict(),
                "outputs": self._outputs_data(),
            },
        )

    def trace(self) -> list[StepRecord]:
        """The steps that started, in the order they started."""
        return sorted(self.records.values(), key=lambda r: r.start)
