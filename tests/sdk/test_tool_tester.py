"""Tools of every kind run in-process through mcphost.sdk.testing.ToolTester."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from mcphost.sdk import (
    CallCancelled,
    Context,
    InvalidArguments,
    Plugin,
    ToolError,
    ToolNotFound,
    ToolTimeout,
)
from mcphost.sdk.testing import LogLine, ProgressReport, ToolTester

plugin = Plugin("kinds")
#: Set by tools so the tests can see what happened inside them.
seen: dict[str, object] = {}
stopped = threading.Event()
waiting = threading.Event()


class Pair(msgspec.Struct):
    left: int
    right: int


@plugin.tool
def sync_add(a: int, b: int = 1) -> int:
    """A plain function."""
    seen["sync_thread"] = threading.current_thread().name
    return a + b


@plugin.tool
async def async_add(a: int, b: int = 1) -> int:
    """A coroutine."""
    await asyncio.sleep(0)
    return a + b


@plugin.tool
def sync_count(n: int) -> Iterator[int]:
    """A generator."""
    try:
        yield from range(n)
    finally:
        seen["sync_count_closed"] = True


@plugin.tool
async def async_count(n: int) -> AsyncIterator[Pair]:
    """An async generator."""
    try:
        for i in range(n):
            await asyncio.sleep(0)
            yield Pair(i, -i)
    finally:
        seen["async_count_closed"] = True


@plugin.tool
def refuse(city: str) -> str:
    """Fails on purpose with an author's code."""
    raise ToolError(f"no such city {city!r}", code="not_found", data={"city": city})


@plugin.tool
def explode() -> None:
    """Fails by accident."""
    raise KeyError("boom")


@plugin.tool
def unsendable():  # type: ignore[no-untyped-def]
    """Returns something that has no JSON form."""
    return object()


@plugin.tool
def chatty(ctx: Context) -> str:
    """Logs at every level and reports progress."""
    ctx.debug("d")
    ctx.info("i")
    ctx.warning("w")
    ctx.error("e")
    for i in range(3):
        ctx.progress(i + 1, 3, f"step {i + 1}")
    return f"{ctx.plugin}.{ctx.tool}#{ctx.call_id}"


@plugin.tool
def bad_level(ctx: Context) -> None:
    """Logs at a level that does not exist."""
    ctx.log("loud", "x")


@plugin.tool
def remember(key: str, value: str, ctx: Context) -> list[str]:
    """Writes a file into the data directory; returns what is there."""
    (ctx.data_dir / key).write_text(value)
    return sorted(p.name for p in ctx.data_dir.iterdir())


@plugin.tool
def polite_loop(ctx: Context) -> str:
    """A long sync loop that polls for cancellation, as sync tools should."""
    seen["remaining"] = ctx.time_remaining()
    try:
        while True:
            ctx.check_cancelled()
            time.sleep(0.005)
    except CallCancelled:
        stopped.set()
        raise


@plugin.tool
async def wait(ctx: Context) -> None:
    """Waits until cancelled."""
    waiting.set()
    try:
        await asyncio.sleep(3600)
    finally:
        seen["wait_cancelled"] = ctx.cancelled


@pytest.fixture
def tester() -> Iterator[ToolTester]:
    seen.clear()
    stopped.clear()
    waiting.clear()
    with ToolTester(plugin) as t:
        yield t


def test_sync_tools_run_on_a_worker_thread_and_return_their_result(tester: ToolTester) -> None:
    assert tester.call("sync_add", {"a": 2}) == 3
    assert tester.call("kinds.sync_add", {"a": 2, "b": 5}) == 7
    assert str(seen["sync_thread"]).startswith("tool")


def test_async_tools_run_on_the_loop_and_return_their_result(tester: ToolTester) -> None:
    assert tester.call("async_add", {"a": 40, "b": 2}) == 42


def test_generators_stream_their_items(tester: ToolTester) -> None:
    assert tester.stream("sync_count", {"n": 4}) == [0, 1, 2, 3]
    assert seen["sync_count_closed"] is True


def test_async_generators_stream_their_items_as_plain_data(tester: ToolTester) -> None:
    assert tester.stream("async_count", {"n": 3}) == [
        {"left": 0, "right": 0},
        {"left": 1, "right": -1},
        {"left": 2, "right": -2},
    ]


@pytest.mark.parametrize("tool", ["sync_count", "async_count"])
def test_stopping_a_stream_early_closes_the_generator(tester: ToolTester, tool: str) -> None:
    items = tester.stream(tool, {"n": 1_000_000}, limit=2)
    assert len(items) == 2
    assert seen[f"{tool}_closed"] is True


def test_calling_a_streaming_tool_collects_its_items(tester: ToolTester) -> None:
    assert tester.call("sync_count", {"n": 3}) == [0, 1, 2]


def test_a_tool_error_reaches_the_caller_with_its_own_code_and_data(tester: ToolTester) -> None:
    with pytest.raises(ToolError) as info:
        tester.call("refuse", {"city": "Atlantis"})
    assert info.value.code == "not_found"
    assert info.value.message == "no such city 'Atlantis'"
    assert info.value.data == {"city": "Atlantis"}
    assert info.value.to_dict()["code"] == "not_found"


def test_any_other_exception_becomes_tool_exception_naming_tool_and_type(
    tester: ToolTester,
) -> None:
    with pytest.raises(ToolError) as info:
        tester.call("explode")
    assert info.value.code == "tool_exception"
    assert "kinds.explode raised KeyError" in info.value.message
    assert info.value.data == {"exception": "KeyError"}


def test_a_result_without_a_json_form_is_refused_with_advice(tester: ToolTester) -> None:
    with pytest.raises(ToolError) as info:
        tester.call("unsendable")
    assert info.value.code == "bad_result"
    assert "cannot be sent as JSON" in info.value.message


def test_invalid_arguments_name_the_field_before_the_tool_runs(tester: ToolTester) -> None:
    with pytest.raises(InvalidArguments) as info:
        tester.call("sync_add", {"a": "two"})
    assert "`$.a`" in info.value.message
    assert "sync_thread" not in seen


def test_an_unknown_tool_is_named_with_the_tools_there_are(tester: ToolTester) -> None:
    with pytest.raises(ToolNotFound) as info:
        tester.call("nope")
    assert "'nope'" in info.value.message and "sync_add" in info.value.message


def test_context_logs_and_progress_are_captured(tester: ToolTester) -> None:
    result = tester.call("chatty")
    call_id = int(result.rsplit("#", 1)[1])
    assert result.startswith("kinds.chatty#")
    assert tester.logs == [
        LogLine("debug", "d", call_id),
        LogLine("info", "i", call_id),
        LogLine("warning", "w", call_id),
        LogLine("error", "e", call_id),
    ]
    assert tester.progress == [
        ProgressReport(1.0, 3, "step 1", call_id),
        ProgressReport(2.0, 3, "step 2", call_id),
        ProgressReport(3.0, 3, "step 3", call_id),
    ]


def test_logging_at_an_unknown_level_fails_the_call_naming_the_levels(tester: ToolTester) -> None:
    with pytest.raises(ToolError) as info:
        tester.call("bad_level")
    assert "debug, info, warning, error" in info.value.message


def test_the_data_dir_is_private_persistent_across_calls_and_removed_at_close() -> None:
    with ToolTester(plugin) as a, ToolTester(plugin) as b:
        assert a.call("remember", {"key": "k1", "value": "v"}) == ["k1"]
        assert a.call("remember", {"key": "k2", "value": "v"}) == ["k1", "k2"]
        assert b.call("remember", {"key": "other", "value": "v"}) == ["other"]
        assert a.data_dir != b.data_dir
        kept = a.data_dir
    assert not kept.exists()


def test_a_given_data_dir_is_used_and_kept(tmp_path: Path) -> None:
    with ToolTester(plugin, data_dir=tmp_path / "d") as t:
        t.call("remember", {"key": "k", "value": "v"})
    assert (tmp_path / "d" / "k").read_text() == "v"


def test_a_deadline_cancels_a_sync_tool_that_polls_its_context(tester: ToolTester) -> None:
    # The loop never ends by itself: only the deadline can end this call.
    with pytest.raises(ToolTimeout) as info:
        tester.call("polite_loop", timeout=0.2)
    assert "kinds.polite_loop did not finish within 0.2s" in info.value.message
    assert stopped.wait(5), "the tool never saw the cancellation"
    remaining = seen["remaining"]
    assert isinstance(remaining, float) and 0 < remaining <= 0.2


def test_cancelling_an_async_call_cancels_the_tool(tester: ToolTester) -> None:
    async def scenario() -> None:
        task = asyncio.create_task(tester.acall("wait"))
        assert await asyncio.to_thread(waiting.wait, 20), "the tool never started"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert seen["wait_cancelled"] is True


def test_a_stream_past_its_deadline_fails_with_tool_timeout(tester: ToolTester) -> None:
    slow = Plugin("slow")

    @slow.tool
    async def drip(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0.05)
            yield i

    with ToolTester(slow) as t, pytest.raises(ToolTimeout):
        t.stream("drip", {"n": 1000}, timeout=0.3)


def test_the_tester_refuses_anything_but_a_plugin() -> None:
    with pytest.raises(TypeError, match=r"needs an mcphost\.sdk\.Plugin"):
        ToolTester("kinds")  # type: ignore[arg-type]
