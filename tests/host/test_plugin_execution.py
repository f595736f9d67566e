"""Calls and streams through the Host to the example plugins, and the errors callers get."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mcphost.host import Host
from mcphost.sdk import (
    ConfigError,
    InvalidArguments,
    PluginError,
    PluginNotFound,
    ToolError,
    ToolNotFound,
    ToolTimeout,
)


@pytest.fixture
def examples(
    plugin_dirs: dict[str, Path], make_host: Callable[..., Host], no_leftover_workers: None
) -> Callable[..., Host]:
    """A host serving the three example plugins (configuration overrides allowed)."""

    def make(**config: Any) -> Host:
        return make_host(plugin_dirs=plugin_dirs.values(), **config)

    return make


def test_plugin_execution_calls_return_plain_json_data(examples: Callable[..., Host]) -> None:
    async def scenario() -> list[Any]:
        async with examples() as host:
            return list(
                await asyncio.gather(
                    host.call("textkit.upper", {"text": "hi"}),
                    host.call("textkit.slugify", {"text": "Héllo, World!"}),
                    host.call("textkit.count", {"text": "a b\nc"}),
                    host.call("mathkit.stats", {"values": [1, 2, 3, 4]}),
                    host.call("mathkit.factorize", {"numbers": [12, 97]}),
                )
            )

    upper, slug, count, stats, factors = asyncio.run(scenario())
    assert upper == "HI"
    assert slug == "hello-world"
    assert count == {"words": 3, "characters": 5, "lines": 2}
    assert stats["mean"] == 2.5 and stats["count"] == 4 and stats["maximum"] == 4
    assert factors == [[2, 2, 3], [97]]


def test_plugin_execution_streams_items_in_order_with_progress(
    examples: Callable[..., Host],
) -> None:
    progress: list[tuple[float, float | None]] = []

    async def scenario() -> tuple[list[Any], int, list[Any]]:
        # The host buffers nothing ahead of its consumer (a high watermark of 1 byte):
        # only the window is in flight (docs/streaming.md).
        async with examples(
            stream_window=3, streaming={"high_watermark": 1, "low_watermark": 0}
        ) as host:
            stream = host.stream(
                "textkit.count_to",
                {"n": 50},
                on_progress=lambda p, t, m: progress.append((p, t)),
            )
            numbers = [await stream.__anext__()]
            # The consumer holds back after one item: the worker may run 3 items ahead
            # (the window), which it does at once ...
            async with asyncio.timeout(20):
                while len(progress) < 1 + 3:
                    await asyncio.sleep(0.005)
            # ... and no further, however long it is given (here: a call it serves
            # meanwhile; without the window it would have produced all 50 by then).
            assert await host.call("textkit.sleep", {"seconds": 0.2}) == 0.2
            ahead = len(progress)
            numbers += [i async for i in stream]
            words = [w async for w in host.stream("textkit.tokens", {"text": "one two three"})]
            return numbers, ahead, words

    numbers, ahead, words = asyncio.run(scenario())
    assert numbers == list(range(50))
    # Items 1..3 sent, and the 4th computed (its progress reported) while it waits for
    # credit to be sent.
    assert ahead in (4, 5), progress
    assert words == ["one", "two", "three"]
    assert progress[-1] == (50.0, 50.0) and len(progress) == 50


def test_stats_give_a_workers_memory_with_what_it_counts_without_a_cgroup_its_pss(
    examples: Callable[..., Host],
) -> None:
    async def scenario() -> dict[str, Any]:
        async with examples() as host:
            assert await host.call("textkit.echo", {"text": "x"}) == "x"
            async with asyncio.timeout(10):  # the watcher's first reading, off the loop
                while "memory_mb" not in _stats(host, "textkit"):
                    await asyncio.sleep(0.01)
            return _stats(host, "textkit")

    stats = asyncio.run(scenario())
    # The rlimits backend has no cgroup: the proportional set size of the worker's tree.
    assert stats["memory_source"] == "pss", stats
    assert 1 < stats["memory_mb"] < 1024, stats
    assert "rss_mb" not in stats


def _stats(host: Host, plugin: str) -> dict[str, Any]:
    (stats,) = [s for s in host.stats() if s["plugin"] == plugin]
    return stats


def test_a_plugins_data_dir_keeps_its_files_across_worker_restarts(
    examples: Callable[..., Host], home_dir: Path
) -> None:
    async def scenario() -> tuple[str, list[str]]:
        async with examples() as host:
            await host.call("notes.save", {"title": "groceries", "body": "milk"})
        async with examples() as host:
            return await host.call("notes.read", {"title": "groceries"}), await host.call(
                "notes.list"
            )

    assert asyncio.run(scenario()) == ("milk", ["groceries"])
    assert (home_dir / "data" / "notes" / "groceries.json").is_file()


def test_plugin_execution_errors_keep_their_stable_codes(examples: Callable[..., Host]) -> None:
    async def scenario() -> dict[str, BaseException]:
        async with examples() as host:
            calls = {
                "tool_error": host.call("mathkit.stats", {"values": []}),
                "invalid": host.call("textkit.upper", {"txt": "typo"}),
                "no_tool": host.call("textkit.lower", {"text": "x"}),
                "no_plugin": host.call("nosuch.tool", {}),
                "bad_name": host.call("textkit", {}),
                "not_dict": host.call("textkit.upper", ["x"]),  # type: ignore[arg-type]
            }
            errors = {}
            for key, coro in calls.items():
                try:
                    await coro
                except BaseException as exc:
                    errors[key] = exc
            return errors

    errors = asyncio.run(scenario())
    tool_error = errors["tool_error"]
    assert isinstance(tool_error, ToolError) and tool_error.code == "empty_input"
    assert "at least one value" in tool_error.message
    invalid = errors["invalid"]
    assert isinstance(invalid, InvalidArguments)
    assert invalid.data["tool"] == "textkit.upper" and "`txt`" in invalid.message
    no_tool = errors["no_tool"]
    assert isinstance(no_tool, ToolNotFound)
    assert "plugin textkit has no tool 'lower'" in no_tool.message
    assert "upper" in no_tool.message  # lists what there is
    no_plugin = errors["no_plugin"]
    assert isinstance(no_plugin, PluginNotFound)
    assert "no plugin named 'nosuch'" in no_plugin.message and "textkit" in no_plugin.message
    assert isinstance(errors["bad_name"], ToolNotFound)
    assert "<plugin>.<tool>" in errors["bad_name"].args[0]
    assert isinstance(errors["not_dict"], InvalidArguments)


async def test_a_call_past_its_timeout_fails_and_the_plugin_keeps_serving(
    examples: Callable[..., Host],
) -> None:
    async with examples() as host:
        t0 = time.perf_counter()
        with pytest.raises(ToolTimeout) as info:
            await host.call("textkit.sleep", {"seconds": 30}, timeout=0.2)
        assert time.perf_counter() - t0 < 2.5
        assert "textkit.sleep" in info.value.message
        assert await host.call("textkit.echo", {"text": "alive"}) == "alive"


async def test_the_configured_call_timeout_applies_when_the_caller_gives_none(
    examples: Callable[..., Host],
) -> None:
    async with examples(call_timeout=0.2) as host:
        with pytest.raises(ToolTimeout):
            await host.call("textkit.sleep", {"seconds": 30})


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), float("inf")])
async def test_a_timeout_that_is_not_a_positive_number_of_seconds_is_refused_not_replaced(
    examples: Callable[..., Host], timeout: float
) -> None:
    async with examples() as host:
        with pytest.raises(InvalidArguments, match="timeout must be a number of seconds"):
            await host.call("textkit.echo", {"text": "x"}, timeout=timeout)
        with pytest.raises(InvalidArguments, match="timeout must be a number of seconds"):
            async for _ in host.stream("textkit.count_to", {"n": 2}, timeout=timeout):
                pass
        assert await host.call("textkit.echo", {"text": "x"}, timeout=5) == "x"


@pytest.mark.parametrize("window", [0, -1])
async def test_a_stream_window_below_one_is_refused_not_replaced_by_the_default(
    examples: Callable[..., Host], window: int
) -> None:
    async with examples() as host:
        with pytest.raises(InvalidArguments, match="window must be a whole number"):
            async for _ in host.stream("textkit.count_to", {"n": 2}, window=window):
                pass


async def test_cancelling_the_caller_cancels_the_call_and_the_plugin_keeps_serving(
    examples: Callable[..., Host],
) -> None:
    async with examples() as host:
        running = asyncio.Event()
        host.add_listener(lambda e: running.set() if e.message.startswith("sleeping") else None)
        task = asyncio.create_task(host.call("textkit.sleep", {"seconds": 30}))
        await asyncio.wait_for(running.wait(), 10)  # the tool logs as it starts
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await host.call("textkit.echo", {"text": "next"}) == "next"
        (stats,) = [s for s in host.stats() if s["plugin"] == "textkit"]
        assert stats["inflight"] == 0


async def test_streaming_switched_off_in_the_configuration_refuses_streams(
    examples: Callable[..., Host],
) -> None:
    async with examples(features={"streaming": False}) as host:
        with pytest.raises(ConfigError, match="streaming is switched off"):
            async for _ in host.stream("textkit.count_to", {"n": 2}):
                pass


async def test_calls_before_the_host_starts_are_refused_with_advice(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="not started"):
        await Host(tmp_path).call("textkit.upper", {"text": "x"})
