"""Property tests: reference paths round-trip and resolve; in random DAGs every step runs
once, after every step it depends on (through a real host and real workers)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcphost.host import Host
from mcphost.host.compose import Plan, composition_from_data, make_run
from mcphost.host.compose.refs import format_path, parse_ref

keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
paths = st.lists(st.one_of(keys, st.integers(0, 20)), max_size=6).map(tuple)


@given(st.sampled_from(["$input", "$item", "$steps.s1.output"]), paths)
def test_a_reference_path_parses_back_to_the_same_parts(head: str, path: tuple[Any, ...]) -> None:
    ref = parse_ref(format_path(head, path))
    assert ref.path == path
    assert ref.head == head


def _nest(path: tuple[Any, ...], leaf: Any) -> Any:
    value = leaf
    for part in reversed(path):
        value = [None] * part + [value] if isinstance(part, int) else {part: value}
    return value


@given(paths, st.integers())
def test_a_reference_resolves_to_what_sits_at_its_path(path: tuple[Any, ...], leaf: int) -> None:
    data = _nest(path, leaf)
    assert parse_ref(format_path("$input", path)).get(data) == leaf


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    """Step id -> the ids of earlier steps it depends on (acyclic by construction)."""
    n = draw(st.integers(1, 9))
    ids = [f"s{i}" for i in range(n)]
    order = draw(st.permutations(ids))
    return {
        sid: draw(st.lists(st.sampled_from(order[:i]), unique=True, max_size=3)) if i else []
        for i, sid in enumerate(order)
    }


def test_every_step_of_a_random_dag_runs_once_after_its_dependencies(
    make_host: Callable[..., Host], no_leftover_workers: None
) -> None:
    with asyncio.Runner() as runner:
        host = make_host()
        runner.run(host.start())
        try:

            @settings(
                max_examples=25,
                deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture],
            )
            @given(dags())
            def check(graph: dict[str, list[str]]) -> None:
                steps = [
                    {
                        "id": sid,
                        "tool": "textkit.echo",
                        # The first dependency's output flows in; the rest by depends_on.
                        "args": {"text": f"$steps.{deps[0]}.output" if deps else sid},
                        "depends_on": deps[1:],
                    }
                    for sid, deps in graph.items()
                ]
                comp = composition_from_data({"name": "demo.dag", "steps": steps})
                run = make_run(Plan(comp), host, {})
                runner.run(run.run())
                records = run.records
                assert set(records) == set(graph)
                for sid, deps in graph.items():
                    rec = records[sid]
                    assert rec.attempts == 1 and rec.status == "ok"
                    for d in deps:
                        assert rec.start >= records[d].start + records[d].duration
                    # A chain's text is its root's id, carried typed through each step.
                    root = sid
                    while graph[root]:
                        root = graph[root][0]
                    assert run.outputs[sid] == root

            check()
        finally:
            runner.run(host.close())
