"""Explicit batches: many items at once, each answered on its own, in input order, with
an optional aggregate; from Python (Host.batch) and from the CLI (call --batch)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_mcphost

from mcphost.host import Host, HostConfig
from mcphost.sdk.errors import InvalidArguments, PluginNotFound


@pytest.fixture
def math_host(tmp_path: Path, plugin_dirs: dict[str, Path]) -> Host:
    return Host(
        tmp_path / "home",
        config=HostConfig(allow_unsigned=True, isolation="rlimits"),
        plugin_dirs=[plugin_dirs["mathkit"], plugin_dirs["textkit"]],
        environment=False,
        registry=False,
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_items_of_a_batch_tool_come_back_in_order_each_with_its_own_result(
    math_host: Host,
) -> None:
    numbers = [12, 97, 100, 7, 1024, 999, 2, 6] * 8

    async def scenario() -> Any:
        async with math_host as host:
            return await host.batch("mathkit.factorize", numbers), host.batching()

    outcome, stats = run(scenario())
    assert outcome.succeeded == len(numbers) and outcome.failed == 0
    assert [o.id for o in outcome.items] == list(range(len(numbers)))
    for n, o in zip(numbers, outcome.items, strict=True):
        product = 1
        for f in o.result:
            product *= f
        assert o.ok and product == n
    assert stats["mathkit.factorize"]["largest_batch"] > 1  # the items shared batch calls


def test_items_of_another_tool_are_argument_objects_and_a_failure_stays_its_own(
    math_host: Host,
) -> None:
    items = [{"a": 1, "b": 2}, {"a": "x", "b": 1}, {"b": 10}]

    async def scenario() -> Any:
        async with math_host as host:
            return await host.batch("mathkit.add", items, args={"a": 5}, reduce="sum")

    outcome = run(scenario())
    first, second, third = outcome.items
    assert first.ok and first.result == 3
    assert not second.ok and second.error is not None
    assert second.error["code"] == "invalid_arguments"
    assert third.ok and third.result == 15  # "a" came from the shared arguments
    assert (outcome.succeeded, outcome.failed) == (2, 1)
    assert outcome.aggregate == 18  # the sum of the successful results only


@pytest.mark.parametrize(
    ("reduce", "expected"),
    [("sum", 6.0), ("mean", 2.0), ("count", 3), ("concat", [1.0, 2.0, 3.0])],
)
def test_built_in_reducers_aggregate_the_results(
    math_host: Host, reduce: str, expected: Any
) -> None:
    async def scenario() -> Any:
        async with math_host as host:
            items = [{"a": 0, "b": b} for b in (1, 2, 3)]
            return await host.batch("mathkit.add", items, reduce=reduce)

    assert run(scenario()).aggregate == expected


async def test_a_tool_can_be_the_reducer_and_merge_needs_objects(math_host: Host) -> None:
    async with math_host as host:
        items = [{"a": 0, "b": b} for b in (1, 2, 3, 4)]
        stats = await host.batch("mathkit.add", items, reduce="mathkit.stats")
        merged = await asyncio.gather(
            host.batch("mathkit.add", items, reduce="merge"), return_exceptions=True
        )
        stats, merged = stats.aggregate, merged[0]
    assert stats["mean"] == 2.5 and stats["count"] == 4
    assert isinstance(merged, InvalidArguments) and "merge takes objects" in merged.message


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (("mathkit.add", [1, 2]), InvalidArguments, "must be an object of its arguments"),
        (("textkit.count_to", [{"n": 3}]), InvalidArguments, "streaming tool"),
        (("mathkit.add", [], {"reduce": "median"}), InvalidArguments, "unknown reducer"),
        (("mathkit.add", [], {"max_concurrency": 0}), InvalidArguments, "max_concurrency"),
        (("nope.add", [{}]), PluginNotFound, "no plugin named 'nope'"),
        (("mathkit.add", [{}], {"reduce": "mathkit.add"}), InvalidArguments, "reducer tool"),
    ],
)
def test_bad_batches_are_refused_with_what_is_wrong(
    math_host: Host, call: tuple[Any, ...], error: type[Exception], words: str
) -> None:
    name, items, *rest = call
    kwargs = rest[0] if rest else {}

    async def scenario() -> Any:
        async with math_host as host:
            got = await asyncio.gather(host.batch(name, items, **kwargs), return_exceptions=True)
            # The host keeps serving after a refused batch.
            assert await host.call("mathkit.add", {"a": 1, "b": 1}) == 2
            return got[0]

    outcome = run(scenario())
    assert isinstance(outcome, error), outcome
    assert words in str(outcome)


def test_call_batch_prints_one_json_line_per_item_and_the_aggregate(
    tmp_path: Path, plugin_dirs: dict[str, Path]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('allow_unsigned = true\nisolation = "rlimits"\n')
    items = tmp_path / "items.jsonl"
    items.write_text('{"b": 1}\n\n{"b": "two"}\n{"b": 3}\n')
    env = {"MCPHOST_HOME": str(home), "MCPHOST_PLUGIN_PATH": str(plugin_dirs["mathkit"])}
    argv = ["call", "mathkit.add", '{"a": 10}', "--batch", items, "--reduce", "sum"]
    proc = run_mcphost(*argv, extra_env=env, timeout=120)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[0] == {"id": 0, "ok": True, "result": 11}
    assert lines[1]["id"] == 1 and lines[1]["ok"] is False
    assert lines[1]["error"]["code"] == "invalid_arguments"
    assert lines[2] == {"id": 2, "ok": True, "result": 13}
    assert lines[3] == {"aggregate": 24, "reduce": "sum"}
    assert proc.returncode == 1 and "1 of 3 items failed" in proc.stderr

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"b": 1}\n{oops\n')
    proc = run_mcphost("call", "mathkit.add", "--batch", bad, extra_env=env, timeout=120)
    assert proc.returncode == 2 and "line 2: not valid JSON" in proc.stderr
