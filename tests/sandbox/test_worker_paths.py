"""Where a real worker runs a sync tool (inline on the thread that reads its channel, or
on its thread pool), that deadlines, cancellation, progress and size limits behave the
same on both paths, and what crosses the channel: no progress frame nobody asked for, a
sync generator's items in batches, frames of megabytes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from worker_helpers import running, wait_for_file

from mcphost.sandbox import RlimitBackend, WorkerClient, WorkerSpec, spawn_worker
from mcphost.sandbox.worker import FAST_STREAK
from mcphost.sdk import MCPHostError, ToolTimeout

PluginWriter = Callable[..., WorkerSpec]

PATHS = '''
import threading
import time

from mcphost.sdk import Context, Plugin

plugin = Plugin("paths")


@plugin.tool
def where(sleep: float = 0.0) -> str:
    """The name of the thread the tool ran on, after sleeping ``sleep`` seconds."""
    if sleep:
        time.sleep(sleep)
    return threading.current_thread().name


@plugin.tool
def poll(ctx: Context, seconds: float) -> str:
    """Poll the context until it is cancelled or ``seconds`` pass; say which."""
    (ctx.data_dir / "polling").write_text(str(ctx.call_id))
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if ctx.cancelled:
            (ctx.data_dir / "saw-cancel").write_text(str(ctx.call_id))
            return "cancelled"
        time.sleep(0.005)
    return "done"


@plugin.tool
async def block(seconds: float) -> str:
    """Block the worker's event loop for ``seconds`` (its deadline timer cannot fire)."""
    time.sleep(seconds)
    return "unblocked"


@plugin.tool
def report(ctx: Context, steps: int) -> int:
    """Report progress ``steps`` times, then return ``steps``."""
    for i in range(steps):
        ctx.progress(i + 1, steps)
    return steps


@plugin.tool
def huge(size: int) -> str:
    """A result of ``size`` bytes."""
    return "h" * size


@plugin.tool
def echo(text: str) -> str:
    """The text, back."""
    return text


@plugin.tool
def items(ctx: Context, n: int, then_wait: float = 0.0):
    """Yield 0..n-1, then wait ``then_wait`` seconds (or until cancelled) before ending."""
    yield from range(n)
    end = time.monotonic() + then_wait
    while time.monotonic() < end and not ctx.cancelled:
        time.sleep(0.005)


@plugin.tool
async def loop_kind() -> str:
    """The module of the event loop running async tools."""
    import asyncio

    return type(asyncio.get_running_loop()).__module__
'''


def inline(thread: str) -> bool:
    """The tool ran on the thread that reads the worker's channel (its main thread)."""
    return thread == "MainThread"


def test_a_fast_sync_tool_moves_inline_and_back_to_the_pool_when_it_runs_slow(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("paths", PATHS)

    async def until_inline(w: WorkerClient) -> int:
        """Calls made on the pool before one ran inline (a run the machine slowed
        down past the limit starts the count again, so allow for a few)."""
        for pool_runs in range(200):
            if inline(await w.call("where", {})):
                return pool_runs
        raise AssertionError("the tool never moved inline")

    async def scenario() -> tuple[int, str, int]:
        async with running(spec, backend) as w:
            first = await until_inline(w)
            slow = await w.call("where", {"sleep": 0.01})  # runs inline, and is slow
            again = await until_inline(w)
            return first, slow, again

    first, slow, again = asyncio.run(scenario())
    assert first >= FAST_STREAK
    assert inline(slow)
    # Back on the pool, it had to be fast twice as many times to return.
    assert again >= 2 * FAST_STREAK


async def test_a_sync_tool_on_the_pool_past_its_deadline_fails_and_its_context_is_cancelled(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("paths", PATHS)
    data = Path(spec.data_dir)

    async with running(spec, backend) as w:
        t0 = time.perf_counter()
        with pytest.raises(ToolTimeout) as info:
            await w.call("poll", {"seconds": 30}, timeout=0.3)
        assert time.perf_counter() - t0 < 2.0
        assert "paths.poll did not finish within 0.3s" in info.value.message
        await wait_for_file(data / "saw-cancel", lambda _: True)
        assert await w.call("where", {}) and w.inflight == 0


async def test_a_pool_call_that_sees_its_deadline_before_the_worker_does_still_fails_with_tool_timeout(  # noqa: E501
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    # The tool sees ctx.cancelled (its deadline passed) and returns while the worker's
    # loop is blocked, so the worker's own deadline timer cannot answer first: the
    # answer the tool's thread sends must still be the timeout, not the tool's value.
    spec = write_plugin("paths", PATHS)

    async with running(spec, backend) as w:
        late = asyncio.create_task(w.call("poll", {"seconds": 30}, timeout=0.3))
        blocker = asyncio.create_task(w.call("block", {"seconds": 1.5}))
        with pytest.raises(ToolTimeout) as info:
            await late
        assert "paths.poll did not finish within 0.3s" in info.value.message
        assert await blocker == "unblocked"
        assert w.inflight == 0


async def test_cancelling_a_caller_of_a_sync_tool_cancels_its_context_in_the_worker(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("paths", PATHS)
    data = Path(spec.data_dir)

    async with running(spec, backend) as w:
        task = asyncio.create_task(w.call("poll", {"seconds": 30}))
        await wait_for_file(data / "polling", bool, 20)  # it runs in the worker
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_for_file(data / "saw-cancel", lambda _: True)
        assert await w.call("poll", {"seconds": 0.01}) == "done"


async def test_a_worker_shutting_down_answers_the_pool_calls_it_was_running(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("paths", PATHS)
    data = Path(spec.data_dir)

    w = await spawn_worker(spec, backend, handshake_timeout=10)
    call = asyncio.create_task(w.call("poll", {"seconds": 30}))
    await wait_for_file(data / "polling", bool, 20)  # it runs on the pool
    await w.close()
    with pytest.raises(MCPHostError) as info:
        await call
    assert info.value.code == "call_cancelled"  # answered, not lost with the worker


def test_progress_from_a_pool_thread_arrives_before_the_result(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("paths", PATHS)

    async def scenario() -> tuple[int, list[float]]:
        seen: list[float] = []
        async with running(spec, backend) as w:
            result = await w.call(
                "report", {"steps": 50}, on_progress=lambda p, total, msg: seen.append(p)
            )
            return result, seen

    result, seen = asyncio.run(scenario())
    assert result == 50
    assert seen == [float(i + 1) for i in range(50)]


def test_a_result_over_the_frame_limit_fails_that_call_on_either_path(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("paths", PATHS, max_frame=64 * 1024)

    async def scenario() -> list[str]:
        codes = []
        async with running(spec, backend) as w:
            for _ in range(FAST_STREAK + 2):  # the pool first, then inline
                assert await w.call("huge", {"size": 10}) == "h" * 10
                with pytest.raises(MCPHostError) as info:
                    await w.call("huge", {"size": 100_000})
                codes.append(info.value.code)
        return codes

    assert set(asyncio.run(scenario())) == {"protocol_error"}


def test_a_call_that_asked_for_no_progress_gets_no_progress_frames(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("paths", PATHS)

    async def scenario() -> tuple[int, int]:
        async with running(spec, backend) as w:
            assert w.channel is not None
            before = w.channel.frames_in
            assert await w.call("report", {"steps": 50}) == 50
            quiet = w.channel.frames_in - before
            seen: list[float] = []
            before = w.channel.frames_in
            await w.call("report", {"steps": 50}, on_progress=lambda p, t, m: seen.append(p))
            return quiet, w.channel.frames_in - before

    quiet, asked = asyncio.run(scenario())
    assert quiet == 1  # the result alone
    assert asked == 51  # 50 progress frames, then the result


def test_frames_of_megabytes_cross_both_ways_intact(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("paths", PATHS)
    texts = ["a" * 100, "b" * 300_000, "".join(chr(65 + i % 26) for i in range(5_000_000))]

    async def scenario() -> list[bool]:
        async with running(spec, backend) as w:
            return [await w.call("echo", {"text": t}) == t for t in texts * 2]

    assert asyncio.run(scenario()) == [True] * 6


def test_a_sync_generator_streams_every_item_in_order_within_its_window(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("paths", PATHS)

    async def scenario() -> list[int]:
        async with running(spec, backend) as w:
            return [i async for i in w.stream("items", {"n": 5000}, window=7)]

    assert asyncio.run(scenario()) == list(range(5000))


def test_items_a_sync_generator_yielded_arrive_while_it_is_still_busy(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    # Items wait to leave in batches, but not for a generator busy making the next one.
    spec = write_plugin("paths", PATHS)

    async def scenario() -> list[int]:
        async with running(spec, backend) as w:
            got: list[int] = []
            async with asyncio.timeout(5):
                async for item in w.stream("items", {"n": 3, "then_wait": 30.0}, window=64):
                    got.append(item)
                    if len(got) == 3:
                        break
            return got

    assert asyncio.run(scenario()) == [0, 1, 2]


async def test_a_worker_answers_pings_and_cancels_while_slow_sync_tools_hold_its_pool(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("paths", PATHS)
    data = Path(spec.data_dir)

    async with running(spec, backend) as w:
        slow = [asyncio.create_task(w.call("poll", {"seconds": 30})) for _ in range(3)]
        await asyncio.sleep(0.1)
        assert await w.ping(5.0) < 5.0
        slow[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow[0]
        await wait_for_file(data / "saw-cancel", lambda _: True)
        assert await w.call("echo", {"text": "still here"}) == "still here"
        for task in slow[1:]:
            task.cancel()
        await asyncio.gather(*slow, return_exceptions=True)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_the_worker_runs_async_tools_on_the_event_loop_mcphost_loop_names(
    write_plugin: PluginWriter,
    backend: RlimitBackend,
    loop: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MCPHOST_LOOP", loop)
    spec = write_plugin("paths", PATHS)

    async def scenario() -> str:
        async with running(spec, backend) as w:
            return str(await w.call("loop_kind", {}))

    assert asyncio.run(scenario()).split(".")[0] == loop
