"""Checking a composition before anything runs: tools, references, types, graph, budgets.

:func:`check` returns every problem at once, each naming its step and field. The tools'
schemas come from a catalog: ``<plugin>.<tool>`` (or another composition's name) to an
object with ``input_schema``, ``output_schema`` and ``kind`` (a :class:`ToolInfo` is one).
"""

from __future__ import annotations

import difflib
import graphlib
import re
from collections.abc import Mapping
from typing import Any, Protocol

import msgspec

from .expr import STEP_FIELDS, ExpressionError, compile_condition
from .model import Composition, Problem, Step
from .refs import Ref, RefError, iter_refs, parse_ref
from .schemas import ANY, at_path, flow_problem, json_type

__all__ = [
    "Budgets",
    "ToolSchema",
    "check",
    "default_output",
    "dependencies",
    "output_schema",
]


class ToolSchema(Protocol):
    """What the validator needs to know of a tool."""

    @property
    def input_schema(self) -> dict[str, Any]: ...
    @property
    def output_schema(self) -> dict[str, Any] | None: ...
    @property
    def kind(self) -> str: ...


class Budgets(msgspec.Struct, frozen=True):
    """Upper bounds a composition must keep: steps, concurrent calls of one ``for_each``."""

    max_steps: int = 100
    max_fan_out: int = 64


def dependencies(comp: Composition) -> dict[str, set[str]]:
    """Step id -> the ids of the steps it needs (its references, ``depends_on`` and the
    steps its ``when`` reads). Unknown ids are left in; :func:`check` names them."""
    deps: dict[str, set[str]] = {}
    for step in comp.steps:
        need = set(step.depends_on)
        for _, text in _step_refs(step):
            try:
                ref = parse_ref(text)
            except RefError:
                continue
            if ref.root == "steps":
                need.add(ref.step)
        if step.when is not None:
            need.update(_when_steps(step.when))
        deps[step.id] = need
    return deps


#: ``steps.ID`` read from the top of a condition. Found by a pattern, not by compiling
#: the expression, so that building a plan (at a host's start) never imports the
#: expression library; :func:`check` compiles every condition and names what is wrong.
_WHEN_STEP = re.compile(r"(?<![\w.@\]])steps\.([A-Za-z_][A-Za-z0-9_]*)")


def _when_steps(text: str) -> set[str]:
    return set(_WHEN_STEP.findall(text))


def _step_refs(step: Step) -> list[tuple[str, str]]:
    found = [(f"args.{f}", t) for f, t in iter_refs(step.args)]
    if step.for_each is not None:
        found.append(("for_each.items", step.for_each.items))
    return found


class _Checker:
    def __init__(self, comp: Composition, catalog: Mapping[str, ToolSchema], budgets: Budgets):
        self.comp = comp
        self.catalog = catalog
        self.budgets = budgets
        self.problems: list[Problem] = []
        self.ids = {s.id for s in comp.steps}

    def add(self, step: str, field: str, message: str) -> None:
        self.problems.append(Problem(step=step, field=field, message=message))

    # -- the schema a reference reads ----------------------------------------------
    def produced(self, step_id: str) -> dict[str, Any] | None:
        """The output schema of a step (an array of it for ``for_each``)."""
        step = self.comp.step(step_id)
        tool = self.catalog.get(step.tool)
        out = tool.output_schema if tool is not None else None
        schema = out if out is not None else ANY
        if step.for_each is not None:
            schema = {"type": "array", "items": schema}
        if step.may_not_produce and step.has_default:
            schema = {"anyOf": [schema, {"type": json_type(step.default)}]}
        return schema

    def ref_schema(
        self, step: Step | None, field: str, ref: Ref, ancestors: set[str] | None
    ) -> dict[str, Any] | None:
        """The schema at ``ref`` (None after naming the problem)."""
        sid = step.id if step is not None else ""
        if ref.root == "input":
            schema, missing = at_path(self.comp.input_schema, ref.path)
            if missing:
                self.add(sid, field, f"{ref.text}: the composition's input {missing}")
            return schema
        if ref.root == "item":
            if step is None or step.for_each is None:
                self.add(sid, field, f"{ref.text}: $item is only known in a for_each step")
                return None
            items = self.items_schema(step)
            schema, missing = at_path(items, ref.path)
            if missing:
                self.add(sid, field, f"{ref.text}: the for_each item {missing}")
            return schema
        if ref.step not in self.ids:
            close = difflib.get_close_matches(ref.step, sorted(self.ids), 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.add(sid, field, f"{ref.text}: no step {ref.step!r}{hint}")
            return None
        if step is not None and ref.step == step.id:
            self.add(sid, field, f"{ref.text}: a step cannot read its own output")
            return None
        if ancestors is not None and ref.step not in ancestors:
            self.add(sid, field, f"{ref.text}: step {ref.step!r} is not an ancestor of {sid!r}")
            return None
        producer = self.comp.step(ref.step)
        optional = "$first" in field  # absence is what $first is about
        if producer.may_not_produce and not producer.has_default and not optional:
            why = "may be skipped (it has `when`)" if producer.when else "may fail (on_error)"
            self.add(
                sid,
                field,
                f"{ref.text}: step {ref.step!r} {why} and has no `default` to use then; "
                f"give step {ref.step!r} a default",
            )
        if producer.tool not in self.catalog:
            return None  # named at the producer
        schema, missing = at_path(self.produced(ref.step), ref.path)
        if missing:
            self.add(
                sid,
                field,
                f"{ref.text}: the output of {producer.tool} (step {ref.step!r}) {missing}",
            )
        return schema

    def items_schema(self, step: Step) -> dict[str, Any] | None:
        assert step.for_each is not None
        try:
            ref = parse_ref(step.for_each.items)
        except RefError:
            return None
        if ref.root == "item":
            return None
        probe = _Checker(self.comp, self.catalog, self.budgets)
        schema = probe.ref_schema(step, "", ref, None)
        if schema is None:
            return None
        got, _ = at_path(schema, (0,))
        return got

    # -- the checks ----------------------------------------------------------------
    def run(self) -> list[Problem]:
        comp = self.comp
        group = comp.name.split(".")[0]
        plugins = {n.split(".")[0] for n in self.catalog if not _is_composition(self.catalog[n])}
        if group in plugins:
            self.add("", "name", f"{comp.name!r}: {group!r} is a plugin's name; pick another group")
        if len(comp.steps) > self.budgets.max_steps:
            self.add(
                "",
                "steps",
                f"{len(comp.steps)} steps, more than the budget of {self.budgets.max_steps}",
            )
        seen: set[str] = set()
        for step in comp.steps:
            if step.id in seen:
                self.add(step.id, "id", "two steps have this id; ids must be unique")
            seen.add(step.id)
        deps = dependencies(comp)
        ancestors = self.graph(deps)
        for step in comp.steps:
            self.step(step, None if ancestors is None else ancestors[step.id])
        for field, text in iter_refs(comp.output, "output"):
            try:
                self.ref_schema(None, field, parse_ref(text), None)
            except RefError as exc:
                self.add("", field, str(exc))
        return self.problems

    def graph(self, deps: dict[str, set[str]]) -> dict[str, set[str]] | None:
        for sid, need in deps.items():
            for d in sorted(need - self.ids):
                if d in self.comp.step(sid).depends_on:
                    self.add(sid, "depends_on", f"no step {d!r}")
            if sid in self.comp.step(sid).depends_on:
                self.add(sid, "depends_on", f"the steps form a cycle: {sid} -> {sid}")
        known = {s: {d for d in need if d in self.ids and d != s} for s, need in deps.items()}
        try:
            order = list(graphlib.TopologicalSorter(known).static_order())
        except graphlib.CycleError as exc:
            cycle = exc.args[1]
            self.add(cycle[0], "", "the steps form a cycle: " + " -> ".join(cycle))
            return None
        anc: dict[str, set[str]] = {}
        for s in order:
            anc[s] = set()
            for d in known.get(s, ()):
                anc[s] |= {d} | anc[d]
        return anc

    def step(self, step: Step, ancestors: set[str] | None) -> None:
        sid = step.id
        tool = self.catalog.get(step.tool)
        if step.tool == self.comp.name:
            self.add(sid, "tool", "a composition cannot call itself")
            tool = None
        elif tool is None:
            close = difflib.get_close_matches(step.tool, sorted(self.catalog), 1)
            hint = f" (did you mean {close[0]!r}?)" if close else " (`mcphost tools` lists them)"
            self.add(sid, "tool", f"no tool {step.tool!r}{hint}")
        elif tool.kind == "stream":
            self.add(sid, "tool", f"{step.tool} is a streaming tool; a step calls call tools")
            tool = None
        if step.for_each is not None and step.for_each.max_concurrency > self.budgets.max_fan_out:
            self.add(
                sid,
                "for_each.max_concurrency",
                f"{step.for_each.max_concurrency} is more "
                f"than the fan-out budget of {self.budgets.max_fan_out}",
            )
        sources: dict[str, dict[str, Any] | None] = {}
        for field, text in _step_refs(step):
            try:
                ref = parse_ref(text)
            except RefError as exc:
                self.add(sid, field, str(exc))
                continue
            schema = self.ref_schema(step, field, ref, ancestors)
            if field.startswith("args.") and "." not in field[5:] and "[" not in field[5:]:
                sources[field[5:]] = schema
            if field == "for_each.items" and schema is not None:
                kinds = flow_problem(schema, {"type": "array"})
                if kinds:
                    self.add(sid, field, f"{text} is not a list: {kinds}")
        if step.when is not None:
            self.condition(step, ancestors)
        if tool is not None:
            self.arguments(step, tool, sources)

    def arguments(
        self, step: Step, tool: ToolSchema, sources: dict[str, dict[str, Any] | None]
    ) -> None:
        schema = tool.input_schema
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        closed = schema.get("additionalProperties") is False
        for name, value in step.args.items():
            field = f"args.{name}"
            if name not in props:
                if closed:
                    known = ", ".join(sorted(props)) or "none"
                    self.add(
                        step.id, field, f"{step.tool} has no parameter {name!r} (it has: {known})"
                    )
                continue
            if name in sources:
                src = sources[name]
                if src is None:
                    continue
                why = flow_problem(src, props[name], None, schema)
                if why:
                    self.add(
                        step.id,
                        field,
                        f"{value} ({_kinds(src)}) cannot flow into {step.tool} parameter "
                        f"{name!r} ({_kinds(props[name], schema)}): {why}",
                    )
            elif not any(True for _ in iter_refs(value)):
                why = flow_problem({"type": json_type(value)}, props[name], None, schema)
                if why:
                    self.add(
                        step.id,
                        field,
                        f"the constant {value!r} does not fit {step.tool} "
                        f"parameter {name!r}: {why}",
                    )
        required = schema.get("required")
        for name in required if isinstance(required, list) else []:
            if name not in step.args:
                self.add(
                    step.id,
                    f"args.{name}",
                    f"{step.tool} needs parameter {name!r}; map it to a constant or a reference",
                )

    def condition(self, step: Step, ancestors: set[str] | None) -> None:
        assert step.when is not None
        try:
            cond = compile_condition(step.when)
        except ExpressionError as exc:
            self.add(step.id, "when", f"{step.when!r} {exc}")
            return
        props = self.comp.input_schema.get("properties")
        for names in cond.names:
            root = names[0]
            if root == "input":
                if len(names) > 1 and isinstance(props, dict) and names[1] not in props:
                    self.add(step.id, "when", f"{step.when!r}: the input has no field {names[1]!r}")
            elif root == "steps":
                if len(names) < 2:
                    continue
                other = names[1]
                if other not in self.ids or other == step.id:
                    self.add(step.id, "when", f"{step.when!r}: no earlier step {other!r}")
                elif len(names) > 2 and names[2] not in STEP_FIELDS:
                    self.add(
                        step.id,
                        "when",
                        f"{step.when!r}: steps.{other} has no "
                        f"{names[2]!r} (it has {', '.join(STEP_FIELDS)})",
                    )
            else:
                self.add(
                    step.id,
                    "when",
                    f"{step.when!r}: unknown name {root!r}; an "
                    "expression reads `input` and `steps`",
                )


def _kinds(schema: dict[str, Any], root: dict[str, Any] | None = None) -> str:
    from .schemas import type_names

    names = type_names(schema, root)
    return "any" if len(names) >= 7 else "/".join(sorted(names))


def _is_composition(tool: Any) -> bool:
    return getattr(tool, "kind", "") == "composition" or getattr(tool, "plugin", None) == ""


def check(
    comp: Composition, catalog: Mapping[str, ToolSchema], budgets: Budgets | None = None
) -> list[Problem]:
    """Every problem of ``comp`` against the tools of ``catalog`` (empty: it is good)."""
    return _Checker(comp, catalog, budgets or Budgets()).run()


def output_schema(comp: Composition, catalog: Mapping[str, ToolSchema]) -> dict[str, Any]:
    """The schema of what ``comp`` returns, from its output mapping."""
    checker = _Checker(comp, catalog, Budgets())

    def of(value: Any) -> dict[str, Any]:
        if isinstance(value, str) and value.startswith("$") and not value.startswith("$$"):
            try:
                got = checker.ref_schema(None, "", parse_ref(value), None)
            except RefError:
                return ANY
            return got if got is not None else ANY
        if (
            isinstance(value, dict)
            and list(value) == ["$first"]
            and isinstance(value["$first"], list)
        ):
            return {"anyOf": [of(v) for v in value["$first"]]}
        if isinstance(value, dict):
            return {
                "type": "object",
                "properties": {k: of(v) for k, v in value.items()},
                "required": sorted(value),
            }
        if isinstance(value, list):
            return {"type": "array"}
        return {"type": json_type(value)}

    return of(default_output(comp))


def default_output(comp: Composition) -> Any:
    """The output mapping, or the last step's output when there is none."""
    return comp.output if comp.output is not None else f"$steps.{comp.steps[-1].id}.output"
