"""References carry typed values: whole objects and lists, indexes into them, literals,
``$first``; never string templating."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mcphost.host import Host
from mcphost.host.compose import composition_from_data
from mcphost.host.compose.refs import RefError, parse_ref, resolve
from mcphost.sdk.errors import CompositionFailed, InvalidArguments

STATS_INPUT = {
    "type": "object",
    "properties": {
        "values": {"type": "array", "items": {"type": "number"}},
        "label": {"type": "string"},
    },
    "required": ["values"],
}


def test_whole_objects_and_lists_flow_typed_and_paths_index_into_them(
    with_host: Callable[..., Any],
) -> None:
    comp = composition_from_data(
        {
            "name": "demo.flow",
            "input_schema": STATS_INPUT,
            "steps": [
                {"id": "stats", "tool": "mathkit.stats", "args": {"values": "$input.values"}},
                {"id": "factors", "tool": "mathkit.factorize", "args": {"numbers": [12, 97]}},
                {
                    "id": "again",
                    "tool": "mathkit.stats",
                    "args": {"values": ["$steps.stats.output.mean", "$steps.factors.output[0][2]"]},
                },
            ],
            "output": {
                "summary": "$steps.stats.output",
                "first_factors": "$steps.factors.output[0]",
                "label": "$input.label",
                "literal": "$$input stays text",
                "nested": {"max": "$steps.again.output.maximum", "n": 2},
            },
        }
    )

    async def scenario(host: Host) -> Any:
        host.add_composition(comp)
        return await host.call("demo.flow", {"values": [1, 2, 3, 6], "label": "L"})

    out = with_host(scenario)
    assert out["summary"]["mean"] == 3 and out["summary"]["count"] == 4
    assert out["first_factors"] == [2, 2, 3]
    assert out["label"] == "L"
    assert out["literal"] == "$input stays text"
    assert out["nested"] == {"max": 3, "n": 2}


def test_the_input_is_checked_before_any_step_runs(with_host: Callable[..., Any]) -> None:
    comp = composition_from_data(
        {
            "name": "demo.strict",
            "input_schema": {**STATS_INPUT, "additionalProperties": False},
            "steps": [{"id": "s", "tool": "mathkit.stats", "args": {"values": "$input.values"}}],
        }
    )

    async def scenario(host: Host) -> None:
        host.add_composition(comp)
        with pytest.raises(InvalidArguments, match="missing required argument"):
            await host.call("demo.strict", {})
        with pytest.raises(InvalidArguments, match="unknown argument"):
            await host.call("demo.strict", {"values": [1], "extra": 1})
        with pytest.raises(InvalidArguments, match="must be a JSON object"):
            await host.call("demo.strict", [1])  # type: ignore[arg-type]

    with_host(scenario)


def test_a_path_missing_in_the_data_at_run_time_names_the_reference(
    with_host: Callable[..., Any],
) -> None:
    comp = composition_from_data(
        {
            "name": "demo.loose",
            "input_schema": {"type": "object"},
            "steps": [{"id": "u", "tool": "textkit.upper", "args": {"text": "$input.deep.text"}}],
        }
    )

    async def scenario(host: Host) -> None:
        host.add_composition(comp)
        with pytest.raises(CompositionFailed, match=r"\$input.deep.text: no field 'deep'"):
            await host.call("demo.loose", {"other": 1})

    with_host(scenario)


def test_first_is_the_first_value_that_is_not_null() -> None:
    from mcphost.host.compose.refs import compile_value

    compiled = compile_value({"$first": ["$steps.a.output", "$steps.b.output", "c"]})
    assert resolve(compiled, {}, {"a": None, "b": 2}) == 2
    assert resolve(compiled, {}, {"a": None, "b": None}) == "c"
    assert resolve(compile_value({"$first": ["$input.x"]}), {"x": None}, {}) is None


@pytest.mark.parametrize(
    ("text", "root", "step", "path"),
    [
        ("$input", "input", "", ()),
        ("$input.values[0]", "input", "", ("values", 0)),
        ("$steps.fetch.output.items[0].id", "steps", "fetch", ("items", 0, "id")),
        ("$item.name", "item", "", ("name",)),
    ],
)
def test_references_parse_into_root_step_and_path(
    text: str, root: str, step: str, path: tuple[Any, ...]
) -> None:
    ref = parse_ref(text)
    assert (ref.root, ref.step, ref.path) == (root, step, path)


@pytest.mark.parametrize("text", ["$inputs", "$steps.a", "$steps.a.output.", "$input[x]", "$x"])
def test_a_malformed_reference_says_what_is_wrong(text: str) -> None:
    with pytest.raises(RefError):
        parse_ref(text)


def test_a_reference_into_the_wrong_kind_of_value_names_where() -> None:
    ref = parse_ref("$steps.a.output.items[3]")
    with pytest.raises(RefError, match=r"no item \[3\] at \$steps.a.output.items"):
        ref.get({"items": [1]})
    with pytest.raises(RefError, match=r"no field 'items' at \$steps\.a\.output"):
        ref.get([1])
