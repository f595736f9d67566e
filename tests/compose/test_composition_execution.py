"""Compositions run through a real host: dataflow order, concurrency, conditions,
for_each, nesting, and a composition offered as a tool like any other."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from compose_helpers import text_input

from mcphost.host import Host
from mcphost.host.compose import Plan, composition_from_data, make_run
from mcphost.sdk.errors import CompositionUnavailable, PluginNotFound

TITLE = composition_from_data(
    {
        "name": "demo.title",
        "description": "Upper-case a title and count its words",
        "input_schema": text_input("title"),
        "steps": [
            {"id": "up", "tool": "textkit.upper", "args": {"text": "$input.title"}},
            {"id": "slug", "tool": "textkit.slugify", "args": {"text": "$steps.up.output"}},
            {"id": "count", "tool": "textkit.count", "args": {"text": "$input.title"}},
        ],
        "output": {"slug": "$steps.slug.output", "words": "$steps.count.output.words"},
    }
)


def test_a_composition_is_a_tool_listed_and_called_like_any_other(
    with_host: Callable[..., Any],
) -> None:
    async def scenario(host: Host) -> tuple[Any, Any]:
        host.add_composition(TITLE)
        info = {t.name: t for t in host.tools()}["demo.title"]
        return info, await host.call("demo.title", {"title": "Hello big World"})

    info, result = with_host(scenario)
    assert result == {"slug": "hello-big-world", "words": 3}
    assert info.plugin == "" and info.description == "Upper-case a title and count its words"
    assert info.input_schema == text_input("title")
    assert info.output_schema == {
        "type": "object",
        "properties": {"slug": {"type": "string"}, "words": {"type": "integer"}},
        "required": ["slug", "words"],
    }


def test_independent_steps_run_at_once_and_a_step_waits_only_for_its_inputs(
    with_host: Callable[..., Any],
) -> None:
    comp = composition_from_data(
        {
            "name": "demo.flow",
            "steps": [
                {"id": "slow", "tool": "textkit.sleep", "args": {"seconds": 0.4}},
                {"id": "fast", "tool": "textkit.sleep", "args": {"seconds": 0.01}},
                {
                    "id": "after_fast",
                    "tool": "textkit.sleep",
                    "args": {"seconds": "$steps.fast.output"},
                },
                {
                    "id": "last",
                    "tool": "mathkit.add",
                    "args": {"a": "$steps.slow.output", "b": "$steps.after_fast.output"},
                },
            ],
        }
    )

    async def scenario(host: Host) -> Any:
        run = make_run(Plan(comp), host, {})
        assert await run.run() == pytest.approx(0.41)
        return {r.id: r for r in run.trace()}

    rec = with_host(scenario)
    end = {k: r.start + r.duration for k, r in rec.items()}
    # Dataflow, not levels: after_fast starts once fast is done, while slow still runs.
    assert rec["after_fast"].start >= end["fast"]
    assert rec["after_fast"].start < end["slow"]
    assert rec["last"].start >= max(end["slow"], end["after_fast"])
    assert all(r.status == "ok" and r.attempts == 1 for r in rec.values())


def test_a_condition_skips_a_step_and_its_default_flows_on(
    with_host: Callable[..., Any],
) -> None:
    comp = composition_from_data(
        {
            "name": "demo.cond",
            "input_schema": {
                "type": "object",
                "properties": {"text": {"type": "string"}, "loud": {"type": "boolean"}},
            },
            "steps": [
                {"id": "count", "tool": "textkit.count", "args": {"text": "$input.text"}},
                {
                    "id": "up",
                    "tool": "textkit.upper",
                    "args": {"text": "$input.text"},
                    "when": "input.loud && steps.count.output.words > `1`",
                    "default": "(quiet)",
                },
                {"id": "echo", "tool": "textkit.echo", "args": {"text": "$steps.up.output"}},
            ],
        }
    )

    async def scenario(host: Host) -> list[Any]:
        host.add_composition(comp)
        return [
            await host.call("demo.cond", {"text": "two words", "loud": True}),
            await host.call("demo.cond", {"text": "two words", "loud": False}),
            await host.call("demo.cond", {"text": "one", "loud": True}),
        ]

    assert with_host(scenario) == ["TWO WORDS", "(quiet)", "(quiet)"]


def test_for_each_runs_a_step_per_item_and_keeps_their_order(
    with_host: Callable[..., Any],
) -> None:
    comp = composition_from_data(
        {
            "name": "demo.squares",
            "input_schema": {
                "type": "object",
                "properties": {"values": {"type": "array", "items": {"type": "number"}}},
                "required": ["values"],
            },
            "steps": [
                {
                    "id": "sq",
                    "tool": "mathkit.square",
                    "args": {"x": "$item"},
                    "for_each": {"items": "$input.values", "max_concurrency": 3},
                },
                {"id": "sum", "tool": "mathkit.total", "args": {"values": "$steps.sq.output"}},
            ],
            "output": {"squares": "$steps.sq.output", "sum": "$steps.sum.output"},
        }
    )

    async def scenario(host: Host) -> Any:
        host.add_composition(comp)
        return await host.call("demo.squares", {"values": [3, 1, 4, 1, 5, 9, 2, 6]})

    result = with_host(scenario)
    assert result == {"squares": [9, 1, 16, 1, 25, 81, 4, 36], "sum": 173}


def test_a_composition_may_call_another(with_host: Callable[..., Any]) -> None:
    outer = composition_from_data(
        {
            "name": "demo.outer",
            "input_schema": text_input("title"),
            "steps": [
                {"id": "inner", "tool": "demo.title", "args": {"title": "$input.title"}},
                {
                    "id": "loud",
                    "tool": "textkit.upper",
                    "args": {"text": "$steps.inner.output.slug"},
                },
            ],
        }
    )

    async def scenario(host: Host) -> Any:
        host.add_composition(TITLE)
        host.add_composition(outer)
        return await host.call("demo.outer", {"title": "a b"})

    assert with_host(scenario) == "A-B"


def test_each_finished_step_is_reported_as_progress(with_host: Callable[..., Any]) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def scenario(host: Host) -> Any:
        host.add_composition(TITLE)
        return await host.call(
            "demo.title", {"title": "x y"}, on_progress=lambda p, t, m: seen.append((p, t, m))
        )

    with_host(scenario)
    assert [(p, t) for p, t, _ in seen] == [(1, 3), (2, 3), (3, 3)]
    assert {m for _, _, m in seen} == {"step up: ok", "step slug: ok", "step count: ok"}


def test_composition_switched_off_is_neither_listed_nor_callable_and_plain_calls_work(
    with_host: Callable[..., Any],
) -> None:
    async def scenario(host: Host) -> Any:
        with pytest.raises(CompositionUnavailable, match=r"features\.composition = false"):
            host.add_composition(TITLE)
        assert all(t.plugin for t in host.tools())
        with pytest.raises(PluginNotFound):
            await host.call("demo.title", {"title": "x"})
        return await host.call("textkit.upper", {"text": "still"})

    assert with_host(scenario, features={"composition": False}) == "STILL"


def test_runs_are_counted_in_the_metrics(with_host: Callable[..., Any]) -> None:
    async def scenario(host: Host) -> bytes:
        host.add_composition(TITLE)
        await host.call("demo.title", {"title": "x y"})
        await host.call("demo.title", {"title": "z"})
        from mcphost.host.observe.export import render

        assert host.metrics is not None
        return render(host.metrics, host)

    text = with_host(scenario).decode()
    assert 'mcphost_composition_runs_total{composition="demo.title",outcome="ok"} 2.0' in text
    assert 'mcphost_composition_steps_total{composition="demo.title",what="run"} 6.0' in text
    assert 'mcphost_composition_duration_seconds_count{composition="demo.title"} 2.0' in text


def test_cancelling_the_caller_cancels_the_steps_in_flight(
    with_host: Callable[..., Any],
) -> None:
    comp = composition_from_data(
        {
            "name": "demo.slow",
            "steps": [
                {"id": f"s{i}", "tool": "textkit.sleep", "args": {"seconds": 30}} for i in range(3)
            ],
            "output": "$steps.s0.output",
        }
    )

    async def scenario(host: Host) -> int:
        host.add_composition(comp)
        started = asyncio.Event()
        host.add_listener(lambda e: started.set() if e.kind == "log" else None)
        task = asyncio.create_task(host.call("demo.slow", {}))
        await asyncio.wait_for(started.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert host.metrics is not None
        # The worker is told of each cancel; the host counts nothing in flight.
        for _ in range(100):
            if host.metrics.plugins["textkit"].in_flight == 0:
                break
            await asyncio.sleep(0.05)
        return host.metrics.plugins["textkit"].in_flight

    assert with_host(scenario) == 0
