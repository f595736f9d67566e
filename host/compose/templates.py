"""Builders for the common shapes of composition, and the templates of ``compose new``.

Each builder returns a :class:`Composition` to check and serve; :data:`TEMPLATES` holds
one example of each, written against the example plugins (textkit, mathkit) so that
``mcphost compose new TEMPLATE NAME`` gives a file that validates and runs as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .model import Composition, ForEach, Retry, Step

__all__ = [
    "TEMPLATES",
    "branch",
    "fallback",
    "gather",
    "map_reduce",
    "pipeline",
    "retry_wrapper",
    "template",
    "to_toml",
]

Schema = dict[str, Any]


def _input(props: Mapping[str, Schema]) -> Schema:
    return {"type": "object", "properties": dict(props), "required": sorted(props)}


def pipeline(
    name: str,
    chain: Sequence[tuple[str, str]],
    *,
    input_schema: Schema,
    first_args: Mapping[str, Any],
    description: str = "",
) -> Composition:
    """Steps one after another: each step's output goes into the next step's parameter
    (``chain``: (tool, parameter) pairs; the first step takes ``first_args``)."""
    steps = []
    for i, (tool, param) in enumerate(chain):
        args = dict(first_args) if i == 0 else {param: f"$steps.s{i}.output"}
        steps.append(Step(id=f"s{i + 1}", tool=tool, args=args))
    return Composition(name=name, description=description, input_schema=input_schema, steps=steps)


def gather(
    name: str,
    branches: Mapping[str, tuple[str, Mapping[str, Any]]],
    reducer: tuple[str, str],
    *,
    input_schema: Schema,
    description: str = "",
) -> Composition:
    """Independent steps run at once; a reducer step gets their outputs as a list."""
    steps = [Step(id=sid, tool=tool, args=dict(args)) for sid, (tool, args) in branches.items()]
    tool, param = reducer
    steps.append(
        Step(id="reduce", tool=tool, args={param: [f"$steps.{sid}.output" for sid in branches]})
    )
    return Composition(name=name, description=description, input_schema=input_schema, steps=steps)


def map_reduce(
    name: str,
    items: str,
    mapper: tuple[str, str],
    reducer: tuple[str, str],
    *,
    input_schema: Schema,
    max_concurrency: int = 8,
    description: str = "",
) -> Composition:
    """Call ``mapper`` for every item of the list at ``items`` (concurrently), then
    ``reducer`` with the list of results."""
    m_tool, m_param = mapper
    r_tool, r_param = reducer
    steps = [
        Step(
            id="map",
            tool=m_tool,
            args={m_param: "$item"},
            for_each=ForEach(items=items, max_concurrency=max_concurrency),
        ),
        Step(id="reduce", tool=r_tool, args={r_param: "$steps.map.output"}),
    ]
    return Composition(name=name, description=description, input_schema=input_schema, steps=steps)


def fallback(
    name: str,
    tools: Sequence[str],
    args: Mapping[str, Any],
    *,
    input_schema: Schema,
    description: str = "",
) -> Composition:
    """Try the tools in turn with the same arguments; the first success wins."""
    steps = []
    for i, tool in enumerate(tools):
        when = None if i == 0 else f"steps.t{i}.status == 'failed'"
        steps.append(
            Step(id=f"t{i + 1}", tool=tool, args=dict(args), on_error="continue", when=when)
        )
    output = {"$first": [f"$steps.{s.id}.output" for s in steps]}
    return Composition(
        name=name,
        description=description,
        input_schema=input_schema,
        steps=steps,
        output=output,
    )


def branch(
    name: str,
    condition: str,
    then: tuple[str, Mapping[str, Any]],
    otherwise: tuple[str, Mapping[str, Any]],
    *,
    input_schema: Schema,
    description: str = "",
) -> Composition:
    """One of two steps, chosen by a condition (JMESPath over ``input``)."""
    steps = [
        Step(id="then", tool=then[0], args=dict(then[1]), when=condition),
        Step(id="otherwise", tool=otherwise[0], args=dict(otherwise[1]), when=f"!({condition})"),
    ]
    output = {"$first": ["$steps.then.output", "$steps.otherwise.output"]}
    return Composition(
        name=name,
        description=description,
        input_schema=input_schema,
        steps=steps,
        output=output,
    )


def retry_wrapper(
    name: str,
    tool: str,
    args: Mapping[str, Any],
    *,
    input_schema: Schema,
    retry: Retry | None = None,
    timeout: float | None = None,
    description: str = "",
) -> Composition:
    """One tool, tried again with backoff on the errors worth retrying."""
    r = retry or Retry(max_attempts=4, retry_on=["worker_crashed", "tool_timeout"])
    return Composition(
        name=name,
        description=description,
        input_schema=input_schema,
        steps=[Step(id="call", tool=tool, args=dict(args), retry=r, timeout=timeout)],
    )


_TEXT = {"text": {"type": "string"}}
_VALUES = {"values": {"type": "array", "items": {"type": "number"}}}

#: Template name -> a function of the composition's name.
TEMPLATES: dict[str, Callable[[str], Composition]] = {
    "pipeline": lambda n: pipeline(
        n,
        [("textkit.upper", "text"), ("textkit.slugify", "text")],
        input_schema=_input(_TEXT),
        first_args={"text": "$input.text"},
        description="Upper-case a title, then make a slug of it",
    ),
    "gather": lambda n: gather(
        n,
        {
            "total": ("mathkit.add", {"a": "$input.a", "b": "$input.b"}),
            "twice": ("mathkit.add", {"a": "$input.a", "b": "$input.a"}),
        },
        ("mathkit.stats", "values"),
        input_schema=_input({"a": {"type": "number"}, "b": {"type": "number"}}),
        description="Two sums at once, then statistics of both",
    ),
    "map-reduce": lambda n: map_reduce(
        n,
        "$input.values",
        ("mathkit.square", "x"),
        ("mathkit.total", "values"),
        input_schema=_input(_VALUES),
        description="The sum of the squares of the values (a map over the list)",
    ),
    "fallback": lambda n: fallback(
        n,
        ["mathkit.flaky", "mathkit.flaky"],
        {"key": "$input.key", "failures": 1},
        input_schema=_input({"key": {"type": "string"}}),
        description="The first of the tools that succeeds (the first fails once per key)",
    ),
    "branch": lambda n: branch(
        n,
        "length(input.text) > `20`",
        ("textkit.slugify", {"text": "$input.text"}),
        ("textkit.upper", {"text": "$input.text"}),
        input_schema=_input(_TEXT),
        description="A slug for a long text, upper case for a short one",
    ),
    "retry": lambda n: retry_wrapper(
        n,
        "textkit.sleep",
        {"seconds": "$input.seconds"},
        input_schema=_input({"seconds": {"type": "number"}}),
        timeout=5.0,
        description="textkit.sleep, retried on a crash or a timeout",
    ),
}


def template(kind: str, name: str) -> Composition:
    """The template ``kind`` as a composition named ``name``."""
    build = TEMPLATES.get(kind)
    if build is None:
        from mcphost.sdk.errors import CompositionInvalid

        raise CompositionInvalid(f"no template {kind!r}; templates: {', '.join(sorted(TEMPLATES))}")
    return build(name)


def to_toml(comp: Composition) -> str:
    """The definition as TOML text (tomlkit keeps the order of the fields)."""
    import tomlkit

    return tomlkit.dumps(comp.to_data())
