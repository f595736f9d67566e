"""The supervisor's one state machine: a start overtaken by a swap, a restart that fails
with an unexpected error."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest
from support.procs import wait_process_gone
from support.waiting import wait_until

from mcphost.host import Host, PluginSource, hookimpl
from mcphost.sdk import ToolSpec, WorkerCrashed

GATED = """
import os
import pathlib
import time

from mcphost.sdk import Plugin

GATE = pathlib.Path({gate!r})
if GATE.parent.joinpath("gated").exists():
    # The test opens the gate; until then this import, and so the worker's start, waits.
    GATE.parent.joinpath("importing").write_text(str(os.getpid()))
    while not GATE.exists():
        time.sleep(0.01)

plugin = Plugin("gated")


@plugin.tool
def version() -> str:
    return {version!r}


@plugin.tool
def pid() -> int:
    return os.getpid()
"""


def gated_source(
    write_plugin_source: Callable[..., PluginSource], gate: Path, version: str
) -> PluginSource:
    source = write_plugin_source(
        "gated", GATED.format(gate=str(gate), version=version), version=version
    )
    # Tools known up front: the host starts no worker until the first call.
    return msgspec.structs.replace(source, tools=[ToolSpec(name="version"), ToolSpec(name="pid")])


def worker_processes(plugin: str) -> list[psutil.Process]:
    """Worker processes of ``plugin`` started by this test process."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            argv = p.cmdline()
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        if "mcphost.sandbox.worker" in argv and json.loads(argv[-1])["plugin"] == plugin:
            out.append(p)
    return out


def test_a_start_overtaken_by_a_swap_stops_its_worker_and_calls_reach_the_swapped_in_version(
    write_plugin_source: Callable[..., PluginSource],
    make_host: Callable[..., Host],
    tmp_path: Path,
    no_leftover_workers: None,
) -> None:
    gate = tmp_path / "gate" / "open"
    gate.parent.mkdir()
    old = gated_source(write_plugin_source, gate, "1.0.0")
    new = gated_source(write_plugin_source, gate, "2.0.0")

    async def scenario() -> tuple[Any, int, list[tuple[int, str]], dict[str, Any], str, int]:
        async with make_host(sources=[old]) as host:
            (gate.parent / "gated").touch()  # the next import of 1.0.0 waits at the gate
            first = asyncio.ensure_future(host.call("gated.version"))
            await wait_until((gate.parent / "importing").exists, 20, "1.0.0 began to start")
            slow_pid = int((gate.parent / "importing").read_text())
            (gate.parent / "gated").unlink()  # 2.0.0 starts at once
            assert await host.activate(new) == "1.0.0"
            gate.touch()  # now the overtaken start of 1.0.0 completes its handshake
            answer = await asyncio.wait_for(first, 20)
            await wait_process_gone(slow_pid, 20)  # the overtaken worker stops
            alive = [
                (p.pid, json.loads(p.cmdline()[-1])["version"]) for p in worker_processes("gated")
            ]
            (stats,) = host.stats()
            return (
                answer,
                slow_pid,
                alive,
                stats,
                await host.call("gated.version"),
                await host.call("gated.pid"),
            )

    answer, slow_pid, alive, stats, later, serving = asyncio.run(scenario())
    # The call waiting for the overtaken start was served by the swapped-in version.
    assert answer == "2.0.0"
    assert later == "2.0.0"
    assert stats["version"] == "2.0.0" and stats["state"] == "running"
    # Exactly one worker runs: the swapped-in version's, the one the host routes to, not
    # the overtaken start's.
    assert alive == [(stats["pid"], "2.0.0")]
    assert serving == stats["pid"] != slow_pid


class FailingOnce:
    """An app's hook that fails when the plugin is started for the second time."""

    def __init__(self) -> None:
        self.starts = 0

    @hookimpl
    def mcphost_plugin_started(self, plugin: str, version: str, pid: int) -> None:
        self.starts += 1
        if self.starts == 2:
            raise RuntimeError("the app's bookkeeping is broken")


def test_a_restart_failing_with_an_unexpected_error_is_logged_and_the_next_call_starts_again(
    write_plugin_source: Callable[..., PluginSource],
    make_host: Callable[..., Host],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    no_leftover_workers: None,
) -> None:
    gate = tmp_path / "gate" / "open"
    gate.parent.mkdir()
    gate.touch()
    source = gated_source(write_plugin_source, gate, "1.0.0")
    hook = FailingOnce()

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], str]:
        async with make_host(sources=[source], hooks=[hook], backoff_initial=0.01) as host:
            first = await host.call("gated.pid")
            crashed = asyncio.ensure_future(host.call("gated.version"))
            os.kill(first, signal.SIGKILL)
            with pytest.raises(WorkerCrashed):
                await crashed
            # The restart (after its backoff) fails in the app's hook.
            await wait_until(lambda: hook.starts >= 2, 20, "no restart was tried")
            await wait_until(
                lambda: host.stats()[0]["state"] != "starting", 20, "stuck in 'starting'"
            )
            after_failure = host.stats()[0]
            # The worker whose start failed is stopped, not left running untracked.
            await wait_until(lambda: not worker_processes("gated"), 20, "a worker still runs")
            answer = await host.call("gated.version")
            return after_failure, host.stats()[0], answer

    with caplog.at_level(logging.ERROR, logger="mcphost.supervisor"):
        after_failure, after, answer = asyncio.run(scenario())
    assert after_failure["state"] == "restarting"
    assert "RuntimeError: the app's bookkeeping is broken" in after_failure["failure"]
    logged = [r.getMessage() for r in caplog.records if r.name == "mcphost.supervisor"]
    assert any(
        "gated 1.0.0 could not start" in m and "the app's bookkeeping is broken" in m
        for m in logged
    ), logged
    assert answer == "1.0.0" and after["state"] == "running"
