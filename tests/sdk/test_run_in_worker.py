"""mcphost.sdk.testing.run_in_worker serves a plugin through a real Host and worker."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest
from support.procs import assert_process_gone

from mcphost.sdk import PluginFailed, ToolError
from mcphost.sdk.testing import ToolTester, run_in_worker

WEATHER = '''
import asyncio
import os

from mcphost.sdk import Context, Plugin, ToolError

plugin = Plugin("weather")


@plugin.tool
def forecast(city: str, days: int = 1, ctx: Context = None) -> dict:
    """A made-up forecast."""
    if city == "Atlantis":
        raise ToolError("no such city 'Atlantis'", code="not_found")
    ctx.info(f"forecast for {city}")
    ctx.progress(1, 1)
    return {"city": city, "days": [f"sunny {d}" for d in range(days)]}


@plugin.tool
async def hourly(hours: int):
    """Stream hourly temperatures."""
    for h in range(hours):
        await asyncio.sleep(0)
        yield {"hour": h, "celsius": 20 + h}


@plugin.tool
def whoami() -> int:
    """The process id serving the call."""
    return os.getpid()
'''


@pytest.fixture
def weather_file(tmp_path: Path) -> Path:
    path = tmp_path / "code" / "weather_plugin.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(WEATHER))
    return path


def test_a_plugin_file_is_served_by_a_real_worker_process(
    weather_file: Path, no_leftover_workers: None
) -> None:
    async def scenario() -> tuple[Any, ...]:
        async with run_in_worker(str(weather_file), isolation="rlimits") as w:
            assert w.name == "weather"
            result = await w.call("forecast", {"city": "Oslo", "days": 2})
            items = [item async for item in w.stream("weather.hourly", {"hours": 3})]
            pid = await w.call("whoami")
            assert pid == w.pid
            cmdline = " ".join(psutil.Process(pid).cmdline())
            with pytest.raises(ToolError) as info:
                await w.call("forecast", {"city": "Atlantis"})
            return result, items, pid, cmdline, info.value.code, w.logs, w.progress

    result, items, pid, cmdline, code, logs, progress = asyncio.run(scenario())
    assert result == {"city": "Oslo", "days": ["sunny 0", "sunny 1"]}
    assert items == [{"hour": h, "celsius": 20 + h} for h in range(3)]
    assert pid != os.getpid()
    assert "mcphost.sandbox.worker" in cmdline
    assert code == "not_found"
    assert any(line.level == "info" and line.message == "forecast for Oslo" for line in logs)
    assert [(p.progress, p.total) for p in progress] == [(1.0, 1.0)]
    assert_process_gone(pid, 5)


def test_a_plugin_object_from_an_imported_module_is_served_by_entry_point(
    weather_file: Path, monkeypatch: pytest.MonkeyPatch, no_leftover_workers: None
) -> None:
    monkeypatch.syspath_prepend(str(weather_file.parent))
    module = importlib.import_module("weather_plugin")
    monkeypatch.delitem(sys.modules, "weather_plugin")

    async def scenario() -> Any:
        async with run_in_worker(module.plugin, isolation="rlimits") as w:
            return await w.call("forecast", {"city": "Rome"})

    assert asyncio.run(scenario()) == {"city": "Rome", "days": ["sunny 0"]}


def test_an_installed_example_plugin_is_served_from_its_entry_point_and_paths(
    plugin_dirs: dict[str, Path], no_leftover_workers: None
) -> None:
    async def scenario() -> tuple[Any, Any]:
        async with run_in_worker(
            "mcphost_mathkit:plugin", paths=[plugin_dirs["mathkit"]], isolation="rlimits"
        ) as w:
            return await w.call("add", {"a": 1, "b": 2}), await w.call("is_prime", {"n": 97})

    assert asyncio.run(scenario()) == (3.0, True)


def test_a_tool_gives_the_same_answer_in_process_and_in_a_worker(
    weather_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(weather_file.parent))
    module = importlib.import_module("weather_plugin")
    monkeypatch.delitem(sys.modules, "weather_plugin")
    args = {"city": "Lima", "days": 3}
    with ToolTester(module.plugin) as t:
        local = t.call("forecast", args), t.stream("hourly", {"hours": 4})

    async def scenario() -> tuple[Any, Any]:
        async with run_in_worker(str(weather_file), isolation="rlimits") as w:
            return await w.call("forecast", args), [
                i async for i in w.stream("hourly", {"hours": 4})
            ]

    assert asyncio.run(scenario()) == local


def test_a_plugin_that_cannot_start_fails_with_the_reason(
    tmp_path: Path, no_leftover_workers: None
) -> None:
    broken = tmp_path / "broken_plugin.py"
    broken.write_text(
        "from mcphost.sdk import Plugin\n"
        "plugin = Plugin('broken')\n"
        "raise RuntimeError('bad config')\n"
    )

    async def scenario() -> None:
        async with run_in_worker(str(broken), name="broken", isolation="rlimits"):
            raise AssertionError("the block must not run")

    with pytest.raises(PluginFailed) as info:
        asyncio.run(scenario())
    assert "broken" in info.value.message
    assert "RuntimeError: bad config" in info.value.message
