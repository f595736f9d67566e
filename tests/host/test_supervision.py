"""Supervision: crashed, hung, greedy and misbehaving workers are contained and restarted."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support.events import HostEvents
from support.procs import assert_process_gone, wait_process_gone

from mcphost.host import Host, HostEvent, PluginSource
from mcphost.sandbox.isolation import Limits
from mcphost.sdk import (
    CallCancelled,
    HandshakeRefused,
    PluginFailed,
    ToolTimeout,
    WorkerCrashed,
)

TROUBLE = '''
import asyncio
import json
import os
import struct
import subprocess
import sys
import time

from mcphost.sdk import Context, Plugin

plugin = Plugin("trouble")


def channel_fd() -> int:
    """The worker's end of the channel, from its command line: a plugin can find it."""
    return int(json.loads(sys.argv[-1])["fd"])


@plugin.tool
def ok() -> str:
    return "ok"


@plugin.tool
def pid() -> int:
    return os.getpid()


@plugin.tool
async def wait(ctx: Context) -> None:
    ctx.info("waiting")
    await asyncio.sleep(3600)


@plugin.tool
def die(status: int = 3) -> None:
    os._exit(status)


@plugin.tool
async def hang(ctx: Context) -> None:
    ctx.info("hanging")
    time.sleep(3600)  # blocks the worker's event loop: it can no longer answer pings


@plugin.tool
async def hog(children: int, mb: int, ctx: Context) -> None:
    code = f"import time; b = b'x' * ({mb} << 20); print('ready', flush=True); time.sleep(3600)"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        for _ in range(children)
    ]
    (ctx.data_dir / "children").write_text(" ".join(str(p.pid) for p in procs))
    await asyncio.sleep(3600)


@plugin.tool
def garbage() -> None:
    os.write(channel_fd(), struct.pack(">I", 4) + b"\\xc1\\xc1\\xc1\\xc1")
    time.sleep(3600)


@plugin.tool
def hangup() -> None:
    os.close(channel_fd())  # the worker's end of the channel, closed under its feet
    time.sleep(3600)


@plugin.tool
def oversized() -> None:
    os.write(channel_fd(), struct.pack(">I", 1 << 30))
    time.sleep(3600)
'''

GOOD = """
from mcphost.sdk import Plugin

plugin = Plugin("good")


@plugin.tool
def echo(text: str) -> str:
    return text
"""


@pytest.fixture
def trouble(write_plugin_source: Callable[..., PluginSource]) -> PluginSource:
    return write_plugin_source("trouble", TROUBLE)


@pytest.fixture
def good(write_plugin_source: Callable[..., PluginSource]) -> PluginSource:
    return write_plugin_source("good", GOOD)


def worker_pid(host: Host, plugin: str) -> int:
    (stats,) = [s for s in host.stats() if s["plugin"] == plugin]
    assert stats["pid"], stats
    return int(stats["pid"])


def test_killing_a_worker_mid_call_fails_the_call_clearly_and_the_next_call_restarts_it(
    make_host: Callable[..., Host], trouble: PluginSource, no_leftover_workers: None
) -> None:
    async def scenario() -> tuple[WorkerCrashed, int, int, dict[str, Any], list[HostEvent]]:
        async with make_host(sources=[trouble]) as host:
            events = HostEvents(host)
            old = worker_pid(host, "trouble")
            call = asyncio.create_task(host.call("trouble.wait"))
            await events.wait_for(lambda e: e.message == "waiting")
            os.kill(old, signal.SIGKILL)
            with pytest.raises(WorkerCrashed) as info:
                await asyncio.wait_for(call, 10)
            assert await host.call("trouble.ok") == "ok"
            new = await host.call("trouble.pid")
            (stats,) = host.stats()
            return info.value, old, new, stats, events.seen

    error, old, new, stats, seen = asyncio.run(scenario())
    assert "trouble 1.0.0" in error.message
    assert "exited on signal SIGKILL" in error.message
    assert "may be retried" in error.message  # says what to do
    assert error.data["plugin"] == "trouble" and "SIGKILL" in error.data["reason"]
    assert new != old
    assert stats["restarts"] == 1 and stats["state"] == "running"
    kinds = [e.kind for e in seen if e.kind != "log"]
    assert kinds == ["plugin_crashed", "plugin_started"]


def test_a_plugin_crashing_on_every_call_is_marked_failed_after_max_restarts(
    make_host: Callable[..., Host], trouble: PluginSource, no_leftover_workers: None
) -> None:
    async def scenario() -> tuple[list[str], PluginFailed, dict[str, Any], str]:
        async with make_host(sources=[trouble], max_restarts=2, backoff_initial=0.01) as host:
            crashes: list[str] = []
            failed: PluginFailed | None = None
            for _ in range(10):
                try:
                    await host.call("trouble.die", {"status": 3})
                except WorkerCrashed as exc:
                    crashes.append(exc.message)
                except PluginFailed as exc:
                    failed = exc
                    break
            assert failed is not None, crashes
            (stats,) = host.stats()
            # An operator resets it; it serves again (until the next crash).
            host.reset_plugin("trouble")
            return crashes, failed, stats, await host.call("trouble.ok")

    crashes, failed, stats, after_reset = asyncio.run(scenario())
    assert len(crashes) == 3
    assert all("exited with status 3" in c for c in crashes)
    assert "plugin trouble 1.0.0 is marked failed" in failed.message
    assert "3 crashes within 60s (limit 2)" in failed.message
    assert "last: exited with status 3" in failed.message
    assert "reset" in failed.message  # what to do about it
    assert failed.code == "plugin_failed"
    assert stats["state"] == "failed"
    assert after_reset == "ok"


def test_a_hung_worker_is_detected_by_missed_pings_and_restarted(
    make_host: Callable[..., Host], trouble: PluginSource, no_leftover_workers: None
) -> None:
    async def scenario() -> tuple[WorkerCrashed, float, int, int]:
        async with make_host(sources=[trouble], ping_interval=0.2, ping_timeout=0.5) as host:
            old = worker_pid(host, "trouble")
            t0 = time.perf_counter()
            with pytest.raises(WorkerCrashed) as info:
                await asyncio.wait_for(host.call("trouble.hang"), 20)
            took = time.perf_counter() - t0
            return info.value, took, old, await host.call("trouble.pid")

    error, took, old, new = asyncio.run(scenario())
    assert "did not answer a ping within 0.5s (hung)" in error.message
    assert "trouble" in error.message
    assert took < 5
    assert new != old
    assert_process_gone(old, 5)


@pytest.mark.slow
def test_a_worker_over_its_memory_limit_is_killed_with_a_reason_naming_the_limit(
    make_host: Callable[..., Host], trouble: PluginSource, home_dir: Path, no_leftover_workers: None
) -> None:
    async def scenario() -> tuple[WorkerCrashed, list[int], str]:
        async with make_host(
            sources=[trouble], limits={"memory_mb": 200}, ping_interval=0.2
        ) as host:
            call = asyncio.create_task(host.call("trouble.hog", {"children": 2, "mb": 150}))
            with pytest.raises(WorkerCrashed) as info:
                await asyncio.wait_for(call, 30)
            children = (home_dir / "data" / "trouble" / "children").read_text().split()
            return info.value, [int(p) for p in children], await host.call("trouble.ok")

    error, children, after = asyncio.run(scenario())
    assert "over its limit of 200 MiB" in error.message
    assert "MiB of memory" in error.message
    assert after == "ok"
    # The worker's whole process group went with it.
    assert len(children) == 2
    for pid in children:
        assert_process_gone(pid, 5)


@pytest.mark.parametrize(
    ("tool", "reason"),
    [
        ("garbage", "broke the wire protocol: malformed frame"),
        ("oversized", "broke the wire protocol: peer announced a frame of 1073741824 bytes"),
    ],
)
def test_a_plugin_writing_bad_frames_loses_its_worker_and_the_host_serves_on(
    make_host: Callable[..., Host],
    trouble: PluginSource,
    good: PluginSource,
    tool: str,
    reason: str,
    no_leftover_workers: None,
) -> None:
    async def scenario() -> tuple[WorkerCrashed, str, str]:
        async with make_host(sources=[trouble, good]) as host:
            with pytest.raises(WorkerCrashed) as info:
                await asyncio.wait_for(host.call(f"trouble.{tool}"), 10)
            return (
                info.value,
                await host.call("good.echo", {"text": "unaffected"}),
                await host.call("trouble.ok"),
            )

    error, other, restarted = asyncio.run(scenario())
    assert reason in error.message and "trouble 1.0.0" in error.message
    assert other == "unaffected"
    assert restarted == "ok"


def test_a_worker_closing_its_channel_is_reported_as_such_and_leaves_no_unretrieved_error(
    make_host: Callable[..., Host],
    trouble: PluginSource,
    caplog: pytest.LogCaptureFixture,
    no_leftover_workers: None,
) -> None:
    async def scenario() -> tuple[WorkerCrashed, str]:
        # Pings every 0.1 s: one is sure to be sent to the closed channel.
        async with make_host(sources=[trouble], ping_interval=0.1) as host:
            with pytest.raises(WorkerCrashed) as info:
                await asyncio.wait_for(host.call("trouble.hangup"), 20)
            return info.value, await host.call("trouble.ok")

    with caplog.at_level(logging.WARNING):
        error, after = asyncio.run(scenario())
        gc.collect()
    assert "closed its channel to the host" in error.message
    assert "the host killed it" in error.message
    assert "SIGKILL" not in error.message and "out of memory" not in error.message
    assert after == "ok"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "closed its channel to the host" in logged
    assert "never retrieved" not in logged


def test_closing_the_host_ends_every_worker_and_every_call_in_flight(
    make_host: Callable[..., Host],
    trouble: PluginSource,
    good: PluginSource,
    plugin_dirs: dict[str, Path],
    no_leftover_workers: None,
) -> None:
    async def scenario() -> tuple[list[int], list[BaseException | None]]:
        host = make_host(sources=[trouble, good], plugin_dirs=[plugin_dirs["textkit"]])
        await host.start()
        events = HostEvents(host)
        pids = [worker_pid(host, p) for p in ("trouble", "good", "textkit")]
        call = asyncio.create_task(host.call("trouble.wait"))
        stream = host.stream("textkit.count_to", {"n": 10_000, "delay": 0.01})
        await stream.__anext__()
        await events.wait_for(lambda e: e.message == "waiting")
        await asyncio.wait_for(host.close(), 10)
        results: list[BaseException | None] = []
        try:
            await asyncio.wait_for(call, 5)
            results.append(None)
        except BaseException as exc:
            results.append(exc)
        try:
            async for _ in stream:
                pass
            results.append(None)
        except BaseException as exc:
            results.append(exc)
        return pids, results

    pids, results = asyncio.run(scenario())
    # Both the call and the stream end with the one error that says why, not just any.
    assert [type(r) for r in results] == [CallCancelled, CallCancelled], results
    for r in results:
        assert isinstance(r, CallCancelled)
        assert r.message == "the call was cancelled: the host is stopping"
    for pid in pids:
        assert_process_gone(pid, 5)


SLOW = """
import asyncio
from mcphost.sdk import Context, Plugin

plugin = Plugin("slow")


@plugin.tool
async def wait(ctx: Context, seconds: float) -> str:
    ctx.info("waiting")
    await asyncio.sleep(seconds)
    return "done"
"""


def test_a_call_outlasting_a_swaps_drain_time_is_cancelled_saying_so(
    write_plugin_source: Callable[..., PluginSource],
    make_host: Callable[..., Host],
    no_leftover_workers: None,
) -> None:
    old = write_plugin_source("slow", SLOW, version="1.0.0")
    new = write_plugin_source("slow", SLOW, version="2.0.0")

    async def scenario() -> tuple[CallCancelled, Any]:
        async with make_host(sources=[old], drain_timeout=0.3) as host:
            events = HostEvents(host)
            long_call = asyncio.ensure_future(host.call("slow.wait", {"seconds": 30}))
            await events.wait_for(lambda e: e.message == "waiting")  # it runs in 1.0.0
            assert await host.activate(new) == "1.0.0"
            with pytest.raises(CallCancelled) as info:
                await asyncio.wait_for(long_call, 10)
            return info.value, await host.call("slow.wait", {"seconds": 0})

    error, after = asyncio.run(scenario())
    assert getattr(error, "code", None) == "call_cancelled"
    assert "slow 1.0.0" in str(error) and "was swapped out" in str(error)
    assert "drain_timeout" in str(error)
    assert after == "done"


BURN = """
import os
import time

from mcphost.sdk import Plugin

plugin = Plugin("burn")


@plugin.tool
def burn(children: int, seconds: float) -> int:
    # One short-lived child after another: each stays under its own RLIMIT_CPU.
    for _ in range(children):
        pid = os.fork()
        if pid == 0:
            end = time.process_time() + seconds
            while time.process_time() < end:
                pass
            os._exit(0)
        os.waitpid(pid, 0)
    return children
"""


async def test_cpu_time_of_children_that_already_ended_counts_against_the_limit(
    write_plugin_source: Callable[..., PluginSource],
    make_host: Callable[..., Host],
    no_leftover_workers: None,
) -> None:
    source = msgspec.structs.replace(
        write_plugin_source("burn", BURN), limits=Limits(cpu_seconds=2, processes=None)
    )

    async with make_host(sources=[source], ping_interval=0.2) as host:
        with pytest.raises(WorkerCrashed) as info:
            await host.call("burn.burn", {"children": 12, "seconds": 0.5}, timeout=30)
        assert "CPU seconds" in info.value.message
        assert "over its limit of 2" in info.value.message


WEDGE = """
import os
import time

from mcphost.sdk import Plugin

plugin = Plugin("wedge")


@plugin.tool
def nap() -> None:
    time.sleep(86400)  # a day: past any deadline, and a thread cannot be stopped


@plugin.tool
def ok() -> str:
    return "ok"


@plugin.tool
def pid() -> int:
    return os.getpid()
"""


async def stuck_calls(host: Host, plugin: str, n: int) -> None:
    """Make ``n`` calls that each sleep for a day and time out."""
    results = await asyncio.gather(
        *(host.call(f"{plugin}.nap", timeout=0.3) for _ in range(n)), return_exceptions=True
    )
    assert all(isinstance(r, ToolTimeout) for r in results), results


async def until_served(host: Host, name: str, bound: float) -> Any:
    """Call ``name`` (each try with a short timeout) until it answers, at most ``bound``."""

    async def attempt() -> Any:
        while True:
            try:
                return await host.call(name, timeout=0.5)
            except ToolTimeout:
                continue

    return await asyncio.wait_for(attempt(), bound)


def test_a_worker_whose_threads_are_all_stuck_past_their_deadline_is_replaced_and_serves_again(
    write_plugin_source: Callable[..., PluginSource],
    make_host: Callable[..., Host],
    no_leftover_workers: None,
) -> None:
    wedge = write_plugin_source("wedge", WEDGE)

    async def scenario() -> tuple[int, int, str, HostEvent, dict[str, Any]]:
        async with make_host(sources=[wedge], worker_threads=8, ping_interval=0.2) as host:
            events = HostEvents(host)
            old = worker_pid(host, "wedge")
            await stuck_calls(host, "wedge", 8)
            answer = await until_served(host, "wedge.ok", 20)
            new = await host.call("wedge.pid")
            replaced = await events.wait_for(lambda e: e.kind == "plugin_replaced")
            await wait_process_gone(old, 20)
            (stats,) = host.stats()
            return old, new, answer, replaced, stats

    old, new, answer, replaced, stats = asyncio.run(scenario())
    assert answer == "ok"
    assert new != old
    assert replaced.plugin == "wedge" and replaced.version == "1.0.0"
    assert "all 8 of its threads are stuck in calls that timed out" in replaced.message
    # A replacement is not a crash: nothing counts towards marking the plugin failed.
    assert stats["state"] == "running" and stats["restarts"] == 0


def test_resetting_a_plugin_replaces_a_worker_with_threads_stuck_in_timed_out_calls(
    write_plugin_source: Callable[..., PluginSource],
    make_host: Callable[..., Host],
    no_leftover_workers: None,
) -> None:
    wedge = write_plugin_source("wedge", WEDGE)

    async def scenario() -> tuple[int, int, HostEvent]:
        async with make_host(sources=[wedge], worker_threads=8, ping_interval=0.2) as host:
            events = HostEvents(host)
            old = worker_pid(host, "wedge")
            await stuck_calls(host, "wedge", 3)  # not all of them: the worker still serves
            assert await host.call("wedge.ok") == "ok"

            async def stuck_seen() -> None:
                # The worker reports its stuck threads in its answer to each ping.
                while host.stats()[0].get("stuck", 0) < 3:
                    await asyncio.sleep(0.02)

            await asyncio.wait_for(stuck_seen(), 10)
            host.reset_plugin("wedge")
            replaced = await events.wait_for(lambda e: e.kind == "plugin_replaced")
            await wait_process_gone(old, 20)
            return old, await host.call("wedge.pid"), replaced

    old, new, replaced = asyncio.run(scenario())
    assert new != old
    assert "reset" in replaced.message and "3 of its 8 threads" in replaced.message


FORGED = """
from mcphost.sdk import Plugin, ToolSpec

plugin = Plugin("forged")


@plugin.tool
def ok() -> str:
    return "ok"


# Past the SDK's checks: a tool name with the host's separator in it.
plugin.specs = lambda: [ToolSpec(name="ok.evil")]
"""


def test_a_worker_with_a_bad_handshake_is_refused_not_restarted_and_others_serve_on(
    write_plugin_source: Callable[..., PluginSource],
    make_host: Callable[..., Host],
    good: PluginSource,
    no_leftover_workers: None,
) -> None:
    forged = write_plugin_source("forged", FORGED)

    async def scenario() -> tuple[HandshakeRefused, dict[str, Any], str]:
        async with make_host(sources=[forged, good]) as host:
            with pytest.raises(HandshakeRefused) as info:
                await host.call("forged.ok")
            (stats,) = [s for s in host.stats() if s["plugin"] == "forged"]
            return info.value, stats, await host.call("good.echo", {"text": "unaffected"})

    error, stats, other = asyncio.run(scenario())
    assert "worker for forged 1.0.0 was refused: tool name 'ok.evil' is not allowed" in (
        error.message
    )
    assert stats["state"] == "refused" and stats["restarts"] == 0 and stats["pid"] is None
    assert other == "unaffected"
