"""Where the host finds plugins: entry points in a directory, the environment, the plugin path."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mcphost.host import Host, PluginSource, discover_directory, discover_environment
from mcphost.host.sources import discover_plugin_path
from mcphost.sdk.schema import ToolSpec

EXAMPLE_TOOLS = {
    "textkit": {"upper", "echo", "count", "slugify", "tokens", "count_to", "sleep"},
    "mathkit": {
        "add",
        "square",
        "total",
        "flaky",
        "stats",
        "is_prime",
        "factorize",
        "spin",
        "primes_below",
    },
    "notes": {"save", "read", "list"},
}


def test_plugin_loading_finds_entry_points_in_a_directory_without_importing_them(
    plugin_dirs: dict[str, Path],
) -> None:
    before = set(sys.modules)
    found = discover_directory(plugin_dirs["textkit"])
    assert [(s.name, s.version, s.entry, s.origin) for s in found] == [
        ("textkit", "1.0.0", "mcphost_textkit:plugin", "directory")
    ]
    assert found[0].paths == [str(plugin_dirs["textkit"].resolve())]
    assert found[0].dist_info.endswith("mcphost_textkit-1.0.0.dist-info")
    assert "mcphost_textkit" not in set(sys.modules) - before


def test_plugin_loading_serves_every_tool_of_plugins_installed_into_directories(
    plugin_dirs: dict[str, Path],
    make_host: Callable[..., Host],
    no_leftover_workers: None,
) -> None:
    before = set(sys.modules)

    async def scenario() -> dict[str, set[str]]:
        async with make_host(plugin_dirs=plugin_dirs.values()) as host:
            tools: dict[str, set[str]] = {}
            for t in host.tools():
                assert t.name == f"{t.plugin}.{t.tool}"
                assert t.version == "1.0.0"
                tools.setdefault(t.plugin, set()).add(t.tool)
            return tools

    assert asyncio.run(scenario()) == EXAMPLE_TOOLS
    # The host learned all that from the workers' handshakes, never by importing.
    assert not [m for m in set(sys.modules) - before if m.startswith("mcphost_")]


def test_plugin_loading_finds_plugins_installed_in_the_hosts_environment(
    plugin_dirs: dict[str, Path],
    make_host: Callable[..., Host],
    monkeypatch: pytest.MonkeyPatch,
    no_leftover_workers: None,
) -> None:
    # The environment is whatever is on sys.path: put an installed plugin there.
    monkeypatch.syspath_prepend(str(plugin_dirs["mathkit"]))
    found = {s.name: s for s in discover_environment()}
    assert found["mathkit"].origin == "environment"
    assert found["mathkit"].entry == "mcphost_mathkit:plugin"

    async def scenario() -> float:
        async with make_host(environment=True) as host:
            assert {p.name: p.origin for p in host.plugins()}["mathkit"] == "environment"
            return float(await host.call("mathkit.add", {"a": 2, "b": 3}))

    assert asyncio.run(scenario()) == 5.0


def test_the_plugin_path_variable_names_more_plugin_directories(
    plugin_dirs: dict[str, Path],
    make_host: Callable[..., Host],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    no_leftover_workers: None,
) -> None:
    path = [str(plugin_dirs["notes"]), "", str(tmp_path / "missing"), str(plugin_dirs["textkit"])]
    monkeypatch.setenv("MCPHOST_PLUGIN_PATH", ":".join(path))
    assert sorted(s.name for s in discover_plugin_path()) == ["notes", "textkit"]

    async def scenario() -> str:
        async with make_host(environment=True) as host:
            return str(await host.call("textkit.upper", {"text": "path"}))

    assert asyncio.run(scenario()) == "PATH"

    # Without the environment, the plugin path is not looked at either.
    async def without() -> list[str]:
        async with make_host(environment=False) as host:
            return [t.name for t in host.tools()]

    assert asyncio.run(without()) == []


def test_a_plugin_found_twice_is_served_from_the_first_place_found(
    plugin_dirs: dict[str, Path],
    make_host: Callable[..., Host],
    write_plugin_source: Callable[..., PluginSource],
    no_leftover_workers: None,
) -> None:
    shadow = write_plugin_source(
        "textkit",
        """
        from mcphost.sdk import Plugin
        plugin = Plugin("textkit")

        @plugin.tool
        def upper(text: str) -> str:
            return "shadow"
        """,
        version="9.9.9",
    )

    async def scenario() -> tuple[str, str]:
        async with make_host(sources=[shadow], plugin_dirs=[plugin_dirs["textkit"]]) as host:
            (source,) = host.plugins()
            return source.version, str(await host.call("textkit.upper", {"text": "x"}))

    assert asyncio.run(scenario()) == ("9.9.9", "shadow")


def test_a_plugin_that_cannot_start_is_left_out_and_the_others_are_served(
    plugin_dirs: dict[str, Path],
    make_host: Callable[..., Host],
    write_plugin_source: Callable[..., PluginSource],
    caplog: pytest.LogCaptureFixture,
    no_leftover_workers: None,
) -> None:
    broken = write_plugin_source("broken", "raise ImportError('a dependency is missing')\n")

    async def scenario() -> tuple[list[str], str]:
        async with make_host(sources=[broken], plugin_dirs=[plugin_dirs["textkit"]]) as host:
            names = sorted({t.plugin for t in host.tools()})
            return names, str(await host.call("textkit.upper", {"text": "ok"}))

    assert asyncio.run(scenario()) == (["textkit"], "OK")
    assert any(
        "plugin broken 1.0.0 could not start" in r.getMessage()
        and "a dependency is missing" in r.getMessage()
        for r in caplog.records
    )


async def test_workers_start_lazily_when_the_tools_are_already_known(
    write_plugin_source: Callable[..., PluginSource],
    make_host: Callable[..., Host],
    no_leftover_workers: None,
) -> None:
    source = write_plugin_source(
        "lazy",
        """
        from mcphost.sdk import Plugin
        plugin = Plugin("lazy")

        @plugin.tool
        def ping() -> str:
            return "pong"
        """,
    )
    source.tools = [ToolSpec(name="ping")]

    async with make_host(sources=[source]) as host:
        assert [t.name for t in host.tools()] == ["lazy.ping"]
        assert host.stats()[0]["pid"] is None and host.stats()[0]["state"] == "stopped"
        assert await host.call("lazy.ping") == "pong"
        assert host.stats()[0]["pid"] is not None
        assert host.stats()[0]["state"] == "running"
