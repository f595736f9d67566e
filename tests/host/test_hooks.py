"""pluggy hooks let an embedding app authorize, observe and react, in the host process only."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mcphost.host import Host, hookimpl
from mcphost.sdk import PluginError, ToolError


class Recorder:
    """A hook plugin that records every hook call, and refuses what it is told to."""

    def __init__(self, refuse: dict[str, bool | str] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.refuse = refuse or {}
        self.crashed = asyncio.Event()

    @hookimpl
    def mcphost_authorize_call(
        self, tool: str, plugin: str, arguments: dict[str, Any]
    ) -> bool | str | None:
        self.calls.append(("authorize", {"tool": tool, "plugin": plugin, "arguments": arguments}))
        return self.refuse.get(tool)

    @hookimpl
    def mcphost_before_call(self, tool: str, plugin: str, arguments: dict[str, Any]) -> None:
        self.calls.append(("before", {"tool": tool, "plugin": plugin}))

    @hookimpl
    def mcphost_after_call(
        self,
        tool: str,
        plugin: str,
        arguments: dict[str, Any],
        duration: float,
        outcome: str,
        error: BaseException | None,
    ) -> None:
        self.calls.append(
            ("after", {"tool": tool, "duration": duration, "outcome": outcome, "error": error})
        )

    @hookimpl
    def mcphost_plugin_started(self, plugin: str, version: str, pid: int) -> None:
        self.calls.append(("started", {"plugin": plugin, "version": version, "pid": pid}))

    @hookimpl
    def mcphost_plugin_crashed(self, plugin: str, version: str, reason: str) -> None:
        self.calls.append(("crashed", {"plugin": plugin, "version": version, "reason": reason}))
        self.crashed.set()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [args for hook, args in self.calls if hook == name]


def test_hooks_see_authorize_before_after_started_and_crashed(
    make_host: Callable[..., Host], plugin_dirs: dict[str, Path], no_leftover_workers: None
) -> None:
    rec = Recorder()

    async def scenario() -> None:
        async with make_host(plugin_dirs=[plugin_dirs["mathkit"]], hooks=[rec]) as host:
            assert await host.call("mathkit.add", {"a": 1, "b": 2}) == 3
            with pytest.raises(ToolError):
                await host.call("mathkit.stats", {"values": []})
            (pid,) = [s["pid"] for s in host.stats()]
            os.kill(pid, signal.SIGKILL)
            await asyncio.wait_for(rec.crashed.wait(), 10)
            assert await host.call("mathkit.is_prime", {"n": 7}) is True

    asyncio.run(scenario())
    started = rec.named("started")
    assert len(started) == 2 and all(s["plugin"] == "mathkit" for s in started)
    assert started[0]["version"] == "1.0.0" and started[0]["pid"] != started[1]["pid"]
    (crashed,) = rec.named("crashed")
    assert crashed["plugin"] == "mathkit" and "SIGKILL" in crashed["reason"]
    authorize = rec.named("authorize")
    assert [a["tool"] for a in authorize] == ["mathkit.add", "mathkit.stats", "mathkit.is_prime"]
    assert authorize[0]["arguments"] == {"a": 1, "b": 2} and authorize[0]["plugin"] == "mathkit"
    assert [b["tool"] for b in rec.named("before")] == [a["tool"] for a in authorize]
    after = rec.named("after")
    assert [a["outcome"] for a in after] == ["ok", "empty_input", "ok"]
    assert isinstance(after[1]["error"], ToolError) and after[0]["error"] is None
    assert all(a["duration"] > 0 for a in after)
    # Each call's hooks run in order: authorize, before, after.
    order = [h for h, _ in rec.calls if h in ("authorize", "before", "after")]
    assert order == ["authorize", "before", "after"] * 3


def test_an_authorize_hook_returning_false_or_a_reason_refuses_the_call(
    make_host: Callable[..., Host],
    plugin_dirs: dict[str, Path],
    home_dir: Path,
    no_leftover_workers: None,
) -> None:
    rec = Recorder(refuse={"notes.save": False, "notes.read": "notes are read-only today"})

    async def scenario() -> tuple[PluginError, PluginError, list[str]]:
        async with make_host(plugin_dirs=[plugin_dirs["notes"]], hooks=[rec]) as host:
            with pytest.raises(PluginError) as saved:
                await host.call("notes.save", {"title": "secret", "body": "x"})
            with pytest.raises(PluginError) as read:
                await host.call("notes.read", {"title": "secret"})
            return saved.value, read.value, await host.call("notes.list")

    saved, read, titles = asyncio.run(scenario())
    assert "call to notes.save was not authorized: refused by the host's policy" in saved.message
    assert "call to notes.read was not authorized: notes are read-only today" in read.message
    # Refused calls never reached the plugin, and were not reported as made.
    assert titles == []
    assert not list((home_dir / "data").rglob("secret.json"))
    assert [b["tool"] for b in rec.named("before")] == ["notes.list"]


def test_the_first_authorize_answer_wins_and_none_means_no_opinion(
    make_host: Callable[..., Host], plugin_dirs: dict[str, Path], no_leftover_workers: None
) -> None:
    class Abstain:
        @hookimpl
        def mcphost_authorize_call(
            self, tool: str, plugin: str, arguments: dict[str, Any]
        ) -> bool | str | None:
            return None

    async def scenario() -> Any:
        async with make_host(plugin_dirs=[plugin_dirs["textkit"]], hooks=[Abstain()]) as host:
            return await host.call("textkit.upper", {"text": "allowed"})

    assert asyncio.run(scenario()) == "ALLOWED"


def test_hooks_also_wrap_streams(
    make_host: Callable[..., Host], plugin_dirs: dict[str, Path], no_leftover_workers: None
) -> None:
    rec = Recorder(refuse={"textkit.tokens": False})

    async def scenario() -> list[Any]:
        async with make_host(plugin_dirs=[plugin_dirs["textkit"]], hooks=[rec]) as host:
            with pytest.raises(PluginError, match="not authorized"):
                async for _ in host.stream("textkit.tokens", {"text": "a b"}):
                    pass
            return [i async for i in host.stream("textkit.count_to", {"n": 3})]

    assert asyncio.run(scenario()) == [0, 1, 2]
    (after,) = rec.named("after")
    assert after["tool"] == "textkit.count_to" and after["outcome"] == "ok"
