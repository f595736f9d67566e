"""``check``: every problem of a composition found before anything runs, each naming its
step and field, against the tools the example plugins really offer."""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from compose_helpers import config_for_tests, text_input

from mcphost.host import Host
from mcphost.host.compose import Budgets, check, composition_from_data, load_composition
from mcphost.sdk.errors import CompositionInvalid


@pytest.fixture(scope="module")
def catalog(plugin_dirs: dict[str, Path]) -> dict[str, Any]:
    """The example plugins' tools as a started host lists them (schemas included)."""
    import asyncio

    async def go() -> dict[str, Any]:
        async with Host(
            plugin_dirs["textkit"].parent / "compose-catalog-home",
            config=config_for_tests(),
            plugin_dirs=[plugin_dirs["textkit"], plugin_dirs["mathkit"]],
            environment=False,
            registry=False,
        ) as host:
            return host.plugin_catalog()

    return asyncio.run(go())


def problems(catalog: dict[str, Any], data: dict[str, Any], **budgets: int) -> list[str]:
    comp = composition_from_data({"name": "demo.test", **data})
    return [str(p) for p in check(comp, catalog, Budgets(**budgets))]


def test_a_good_composition_has_no_problem(catalog: dict[str, Any]) -> None:
    assert (
        problems(
            catalog,
            {
                "input_schema": text_input("title"),
                "steps": [
                    {"id": "up", "tool": "textkit.upper", "args": {"text": "$input.title"}},
                    {"id": "n", "tool": "textkit.count", "args": {"text": "$steps.up.output"}},
                    {"id": "p", "tool": "mathkit.is_prime", "args": {"n": "$steps.n.output.words"}},
                ],
            },
        )
        == []
    )


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (
            {"id": "a", "tool": "textkit.uper", "args": {"text": "x"}},
            "step 'a', tool: no tool 'textkit.uper' (did you mean 'textkit.upper'?)",
        ),
        (
            {"id": "a", "tool": "textkit.upper", "args": {}},
            "step 'a', args.text: textkit.upper needs parameter 'text'",
        ),
        (
            {"id": "a", "tool": "textkit.upper", "args": {"text": "x", "loud": True}},
            "step 'a', args.loud: textkit.upper has no parameter 'loud' (it has: text)",
        ),
        (
            {"id": "a", "tool": "mathkit.is_prime", "args": {"n": "seven"}},
            "step 'a', args.n: the constant 'seven' does not fit mathkit.is_prime parameter 'n'",
        ),
        (
            {"id": "a", "tool": "textkit.tokens", "args": {"text": "x"}},
            "step 'a', tool: textkit.tokens is a streaming tool",
        ),
        (
            {"id": "a", "tool": "textkit.upper", "args": {"text": "$input.missing"}},
            "step 'a', args.text: $input.missing: the composition's input has no field 'missing'",
        ),
        (
            {"id": "a", "tool": "textkit.upper", "args": {"text": "$stepz.b.output"}},
            "step 'a', args.text: '$stepz.b.output' is not a reference",
        ),
        (
            {"id": "a", "tool": "textkit.upper", "args": {"text": "$item"}},
            "step 'a', args.text: $item: $item is only known in a for_each step",
        ),
        (
            {"id": "a", "tool": "textkit.upper", "args": {"text": "x"}, "when": "input.title =="},
            "step 'a', when: 'input.title ==' does not compile",
        ),
        (
            {"id": "a", "tool": "textkit.upper", "args": {"text": "x"}, "when": "nobody"},
            "step 'a', when: 'nobody': unknown name 'nobody'",
        ),
        (
            {"id": "a", "tool": "textkit.upper", "args": {"text": "x"}, "when": "input.age"},
            "step 'a', when: 'input.age': the input has no field 'age'",
        ),
        (
            {"id": "a", "tool": "textkit.upper", "args": {"text": "x"}, "depends_on": ["zz"]},
            "step 'a', depends_on: no step 'zz'",
        ),
        (
            {"id": "a", "tool": "demo.test", "args": {}},
            "step 'a', tool: a composition cannot call itself",
        ),
    ],
)
def test_each_mistake_names_its_step_and_field(
    catalog: dict[str, Any], step: dict[str, Any], expected: str
) -> None:
    found = problems(catalog, {"input_schema": text_input("title"), "steps": [step]})
    assert any(p.startswith(expected) for p in found), found


def test_an_integer_output_into_a_string_parameter_names_both_paths_and_types(
    catalog: dict[str, Any],
) -> None:
    found = problems(
        catalog,
        {
            "steps": [
                {"id": "n", "tool": "textkit.count", "args": {"text": "a b"}},
                {"id": "up", "tool": "textkit.upper", "args": {"text": "$steps.n.output.words"}},
            ]
        },
    )
    assert found == [
        "step 'up', args.text: $steps.n.output.words (integer) cannot flow into textkit.upper "
        "parameter 'text' (string): integer cannot flow into string"
    ]


def test_a_field_the_producing_tool_does_not_output_is_named(catalog: dict[str, Any]) -> None:
    found = problems(
        catalog,
        {
            "steps": [
                {"id": "n", "tool": "textkit.count", "args": {"text": "a b"}},
                {"id": "p", "tool": "mathkit.is_prime", "args": {"n": "$steps.n.output.sentences"}},
            ]
        },
    )
    assert len(found) == 1
    assert (
        "step 'p', args.n: $steps.n.output.sentences: the output of textkit.count (step "
        in (found[0])
    )
    assert "has no field 'sentences'" in found[0]


def test_a_cycle_is_printed_as_its_path(catalog: dict[str, Any]) -> None:
    found = problems(
        catalog,
        {
            "steps": [
                {"id": "a", "tool": "textkit.upper", "args": {"text": "$steps.c.output"}},
                {"id": "b", "tool": "textkit.upper", "args": {"text": "$steps.a.output"}},
                {"id": "c", "tool": "textkit.upper", "args": {"text": "$steps.b.output"}},
            ]
        },
    )
    cycles = [p for p in found if "cycle" in p]
    assert len(cycles) == 1
    path = cycles[0].split("form a cycle: ")[1].split(" -> ")
    assert path[0] == path[-1] and set(path) == {"a", "b", "c"} and len(path) == 4


def test_a_step_that_may_be_skipped_needs_a_default_where_it_is_read(
    catalog: dict[str, Any],
) -> None:
    steps: list[dict[str, Any]] = [
        {"id": "a", "tool": "textkit.upper", "args": {"text": "x"}, "when": "input.loud"},
        {"id": "b", "tool": "textkit.echo", "args": {"text": "$steps.a.output"}},
    ]
    schema = {"type": "object", "properties": {"loud": {"type": "boolean"}}}
    found = problems(catalog, {"input_schema": schema, "steps": steps})
    assert found == [
        "step 'b', args.text: $steps.a.output: step 'a' may be skipped (it has `when`) and has "
        "no `default` to use then; give step 'a' a default"
    ]
    steps[0]["default"] = "quiet"
    assert problems(catalog, {"input_schema": schema, "steps": steps}) == []


def test_budgets_of_steps_and_fan_out(catalog: dict[str, Any]) -> None:
    steps = [{"id": f"s{i}", "tool": "textkit.echo", "args": {"text": "x"}} for i in range(5)]
    steps[0] = {
        "id": "s0",
        "tool": "textkit.echo",
        "args": {"text": "$item"},
        "for_each": {"items": "$input.words", "max_concurrency": 9},
    }
    found = problems(
        catalog,
        {
            "input_schema": {
                "type": "object",
                "properties": {"words": {"type": "array", "items": {"type": "string"}}},
            },
            "steps": steps,
        },
        max_steps=4,
        max_fan_out=8,
    )
    assert "composition, steps: 5 steps, more than the budget of 4" in found
    assert "step 's0', for_each.max_concurrency: 9 is more than the fan-out budget of 8" in found


def test_every_problem_is_reported_at_once(catalog: dict[str, Any]) -> None:
    found = problems(
        catalog,
        {
            "name": "textkit.shadow",
            "steps": [
                {"id": "a", "tool": "textkit.uper", "args": {}},
                {"id": "b", "tool": "mathkit.spin", "args": {"microseconds": "$steps.q.output"}},
                {"id": "b", "tool": "textkit.upper", "args": {"text": 5}},
            ],
        },
    )
    text = "\n".join(found)
    assert "'textkit' is a plugin's name" in text
    assert "no tool 'textkit.uper'" in text
    assert "no step 'q'" in text
    assert "two steps have this id" in text
    assert "the constant 5 does not fit" in text


def test_a_file_with_the_wrong_shape_names_step_and_field(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(
        'name = "Demo"\n[[steps]]\nid = "fetch"\ntool = "textkit.upper"\nretries = 3\n'
        "[steps.retry]\nmax_attempts = 0\n"
    )
    with pytest.raises(CompositionInvalid) as err:
        load_composition(f)
    fields = {(p["step"], p["field"]) for p in err.value.data["problems"]}
    assert fields == {("", "name"), ("fetch", "retries"), ("fetch", "retry.max_attempts")}
    assert "step 'fetch', retries: unknown field" in err.value.message


def test_a_json_file_loads_and_a_broken_one_says_so(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"name": "demo.j", "steps": [{"id": "a", "tool": "t.x"}]}))
    assert load_composition(good).steps[0].id == "a"
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(CompositionInvalid, match="is not valid JSON"):
        load_composition(broken)
    with pytest.raises(CompositionInvalid, match="cannot read"):
        load_composition(tmp_path / "absent.toml")


def test_add_composition_refuses_an_invalid_one_with_every_problem(
    with_host: Callable[..., Any],
) -> None:
    async def scenario(host: Host) -> CompositionInvalid:
        comp = composition_from_data(
            {"name": "demo.bad", "steps": [{"id": "a", "tool": "textkit.nope"}]}
        )
        with pytest.raises(CompositionInvalid) as err:
            host.add_composition(comp)
        assert "demo.bad" not in {t.name for t in host.tools()}
        return err.value

    err = with_host(scenario)
    assert err.code == "composition_invalid"
    [problem] = err.data["problems"]
    assert (problem["step"], problem["field"]) == ("a", "tool")
    assert problem["message"].startswith("no tool 'textkit.nope'")


def test_a_back_edge_in_any_dag_is_reported_as_one_cycle_along_real_edges(
    catalog: dict[str, Any],
) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None)
    @given(st.data())
    def check_one(data: st.DataObject) -> None:
        n = data.draw(st.integers(2, 10))
        deps = {
            i: data.draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
            for i in range(n)
        }
        # A path from j up to i exists when i reaches j; a back edge j -> i closes it.
        i = data.draw(st.integers(1, n - 1))
        reach = {i}
        stack = [i]
        while stack:
            for d in deps[stack.pop()]:
                if d not in reach:
                    reach.add(d)
                    stack.append(d)
        steps = [
            {
                "id": f"s{k}",
                "tool": "textkit.echo",
                "args": {"text": "x"},
                "depends_on": [f"s{d}" for d in deps[k]],
            }
            for k in range(n)
        ]
        assert problems(catalog, {"steps": steps}) == []
        j = data.draw(st.sampled_from(sorted(reach)))
        steps[j]["depends_on"] = [*steps[j]["depends_on"], f"s{i}"]
        found = problems(catalog, {"steps": steps})
        assert len(found) == 1 and "form a cycle: " in found[0]
        path = found[0].split("form a cycle: ")[1].split(" -> ")
        assert path[0] == path[-1]
        edges = {(f"s{d}", f"s{k}") for k in range(n) for d in deps[k]} | {(f"s{i}", f"s{j}")}
        assert all((a, b) in edges for a, b in pairwise(path))

    check_one()
