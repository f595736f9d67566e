"""The compositions one host serves: their tool entries, plans, and the call into a run."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from mcphost.sandbox.client import CallLogCallback, ProgressCallback
from mcphost.sdk.errors import CompositionUnavailable, InvalidArguments

from ..observe.calls import BUCKETS
from ..tool_info import ToolInfo
from .engine import Plan, Run, StepCaller
from .model import Composition
from .validate import ToolSchema, output_schema

__all__ = ["CompositionStats", "Served", "ServedComposition"]


class ServedComposition(msgspec.Struct, kw_only=True):
    """One composition as a host offers it."""

    plan: Plan
    info: ToolInfo
    #: Why it cannot be called (a plugin change it relies on was forced through).
    unavailable: str | None = None


class CompositionStats:
    """Counts of composition runs (the metrics registry reads them: host/observe)."""

    def __init__(self) -> None:
        #: (composition, outcome) -> runs; composition -> runs per duration bucket
        #: (observe.calls.BUCKETS, the last one +Inf) and their total seconds.
        self.runs: dict[tuple[str, str], int] = {}
        self.buckets: dict[str, list[int]] = {}
        self.total_seconds: dict[str, float] = {}
        #: (composition, what) -> steps; what is run, skipped, retried or failed.
        self.steps: dict[tuple[str, str], int] = {}

    def finished(self, run: Run, seconds: float) -> None:
        name = run.plan.name
        key = (name, run.outcome)
        self.runs[key] = self.runs.get(key, 0) + 1
        counts = self.buckets.get(name)
        if counts is None:
            counts = self.buckets[name] = [0] * (len(BUCKETS) + 1)
        counts[bisect_left(BUCKETS, seconds)] += 1
        self.total_seconds[name] = self.total_seconds.get(name, 0.0) + seconds
        for rec in run.records.values():
            what = {"ok": "run", "skipped": "skipped"}.get(rec.status, "failed")
            for k, n in ((what, 1), ("retried", rec.retries)):
                if n:
                    self.steps[(name, k)] = self.steps.get((name, k), 0) + n


def info_for(comp: Composition, version: str, catalog: Mapping[str, ToolSchema]) -> ToolInfo:
    return ToolInfo(
        name=comp.name,
        plugin="",
        version=version,
        tool=comp.name.split(".", 1)[1],
        description=comp.description or f"composition of {len(comp.steps)} steps",
        input_schema=comp.input_schema,
        output_schema=output_schema(comp, catalog),
    )


class Served:
    """Name -> served composition, swapped whole when the registry changes."""

    def __init__(self) -> None:
        self.by_name: dict[str, ServedComposition] = {}
        #: Those added from Python (:meth:`Host.add_composition`): kept across changes of
        #: the installed ones unless one of those takes the name.
        self.local: dict[str, ServedComposition] = {}
        self.stats = CompositionStats()

    def replace(
        self,
        comps: Iterable[tuple[Composition, str, str | None]],
        catalog: Mapping[str, ToolSchema],
    ) -> None:
        """Serve exactly ``comps`` ((definition, version, unavailable reason))."""
        catalog = dict(catalog)
        comps = list(comps)
        new: dict[str, ServedComposition] = {}
        # A composition may call another: theirs are in the catalog before their callers'.
        for comp, version, _ in comps:
            catalog.setdefault(comp.name, info_for(comp, version, {}))
        for comp, version, why in comps:
            info = info_for(comp, version, catalog)
            catalog[comp.name] = info
            new[comp.name] = ServedComposition(plan=Plan(comp), info=info, unavailable=why)
        self.by_name = {**self.local, **new}

    def add(self, comp: Composition, version: str, catalog: Mapping[str, ToolSchema]) -> ToolInfo:
        info = info_for(comp, version, catalog)
        served = ServedComposition(plan=Plan(comp), info=info)
        self.by_name[comp.name] = self.local[comp.name] = served
        return info

    def tools(self) -> list[ToolInfo]:
        return [s.info for s in self.by_name.values()]

    async def call(
        self,
        caller: StepCaller,
        name: str,
        args: Any,
        *,
        timeout: float | None,
        call_timeout: float,
        on_progress: ProgressCallback | None,
        on_log: CallLogCallback | None,
    ) -> Any:
        served = self.by_name[name]
        if served.unavailable is not None:
            raise CompositionUnavailable(
                f"composition {name} is unavailable: {served.unavailable}; fix it and "
                f"`mcphost compose add` it again, or roll the plugin back",
                data={"composition": name, "reason": served.unavailable},
            )
        run = make_run(
            served.plan,
            caller,
            args,
            timeout=timeout,
            call_timeout=call_timeout,
            on_progress=on_progress,
            on_log=on_log,
        )
        t0 = time.perf_counter()
        try:
            return await run.run()
        finally:
            self.stats.finished(run, time.perf_counter() - t0)


def make_run(
    plan: Plan,
    caller: StepCaller,
    args: Any,
    *,
    timeout: float | None = None,
    call_timeout: float = 60.0,
    on_progress: ProgressCallback | None = None,
    on_log: CallLogCallback | None = None,
) -> Run:
    """A run of ``plan`` with ``args`` checked against its input schema's top level."""
    name = plan.name
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise InvalidArguments(f"{name}: arguments must be a JSON object (a dict)")
    schema = plan.comp.input_schema
    required = schema.get("required")
    missing = [k for k in required if k not in args] if isinstance(required, list) else []
    if missing:
        raise InvalidArguments(
            f"{name}: missing required argument(s) {', '.join(missing)}",
            data={"tool": name, "missing": missing},
        )
    props = schema.get("properties")
    if schema.get("additionalProperties") is False and isinstance(props, dict):
        extra = sorted(set(args) - set(props))
        if extra:
            raise InvalidArguments(
                f"{name}: unknown argument(s) {', '.join(extra)} (it takes: "
                f"{', '.join(sorted(props)) or 'none'})",
                data={"tool": name, "unknown": extra},
            )
    return Run(
        plan,
        caller,
        args,
        timeout=timeout,
        call_timeout=call_timeout,
        on_progress=on_progress,
        on_log=on_log,
    )
