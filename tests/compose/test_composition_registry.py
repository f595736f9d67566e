"""Installed compositions in a home: a running host follows additions, rollbacks,
removals and unavailability within a second, like a plugin swap."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from compose_helpers import config_for_tests, text_input

from mcphost.host import Home, Host
from mcphost.host.compose import CompositionStore, composition_from_data
from mcphost.host.compose.schemas import at_path, flow_problem, type_names
from mcphost.sdk.errors import CompositionUnavailable, RegistryError


def _title(description: str) -> Any:
    return composition_from_data(
        {
            "name": "demo.live",
            "description": description,
            "input_schema": text_input("text"),
            "steps": [{"id": "u", "tool": "textkit.upper", "args": {"text": "$input.text"}}],
        }
    )


async def _until(predicate: Any, what: str) -> None:
    for _ in range(100):  # 5 s at most
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within 5 s: {what}")


def test_a_running_host_follows_the_installed_compositions(
    home_dir: Path, plugin_dirs: dict[str, Path], no_leftover_workers: None
) -> None:
    h = Home(home_dir)

    async def scenario() -> None:
        async with Host(
            home_dir,
            config=config_for_tests(),
            plugin_dirs=[plugin_dirs["textkit"]],
            environment=False,
        ) as host:
            changed: list[str] = []
            host.add_listener(lambda e: changed.append(e.kind))
            names = lambda: {t.name: t for t in host.tools()}  # noqa: E731
            with CompositionStore(h, create=True) as store:
                assert store.add(_title("first")) == 1
            await _until(lambda: "demo.live" in names(), "the added composition is listed")
            assert "tools_changed" in changed
            assert await host.call("demo.live", {"text": "a"}) == "A"
            with CompositionStore(h) as store:
                assert store.add(_title("second")) == 2
            await _until(lambda: names()["demo.live"].description == "second", "version 2")
            assert names()["demo.live"].version == "2"
            with CompositionStore(h) as store:
                store.mark_unavailable("demo.live", "a plugin change broke it")
            await _until(
                lambda: host._served().by_name["demo.live"].unavailable is not None, "unavailable"
            )
            with pytest.raises(CompositionUnavailable, match="a plugin change broke it"):
                await host.call("demo.live", {"text": "a"})
            with CompositionStore(h) as store:
                assert store.rollback("demo.live") == (2, 1)
            await _until(lambda: names()["demo.live"].description == "first", "rolled back")
            with CompositionStore(h) as store:
                store.remove("demo.live")
            await _until(lambda: "demo.live" not in names(), "removed")

    asyncio.run(scenario())


def test_a_host_started_after_an_add_serves_it_at_once(
    home_dir: Path, plugin_dirs: dict[str, Path], no_leftover_workers: None
) -> None:
    with CompositionStore(Home(home_dir), create=True) as store:
        store.add(_title("ready"))

    async def scenario() -> Any:
        async with Host(
            home_dir,
            config=config_for_tests(),
            plugin_dirs=[plugin_dirs["textkit"]],
            environment=False,
        ) as host:
            return await host.call("demo.live", {"text": "b"})

    assert asyncio.run(scenario()) == "B"


def test_the_store_says_what_is_wrong(home_dir: Path) -> None:
    h = Home(home_dir)
    with CompositionStore(h) as store:
        assert store.records() == [] and store.generation() == 0
    with CompositionStore(h, create=True) as store:
        with pytest.raises(RegistryError, match=r"no composition named 'demo\.none'"):
            store.record("demo.none")
        store.add(_title("one"))
        with pytest.raises(RegistryError, match="no earlier version"):
            store.rollback("demo.live")
        store.add(_title("two"))
        with pytest.raises(RegistryError, match="has no version 7"):
            store.rollback("demo.live", 7)
        with pytest.raises(RegistryError, match="is active already"):
            store.rollback("demo.live", 2)
        with pytest.raises(RegistryError, match="has no version 9"):
            store.definition("demo.live", 9)


def test_schemas_with_definitions_unions_and_enums_are_followed() -> None:
    schema = {
        "type": "object",
        "properties": {"item": {"$ref": "#/$defs/Item"}, "tag": {"enum": ["a", "b"]}},
        "$defs": {
            "Item": {
                "type": "object",
                "properties": {"id": {"anyOf": [{"type": "integer"}, {"type": "null"}]}},
            }
        },
    }
    got, missing = at_path(schema, ("item", "id"))
    assert missing is None and type_names(got, schema) == {"integer", "null"}
    assert at_path(schema, ("item", "name"))[1] == "has no field 'name' at .item (a object)"
    assert at_path(schema, ("tag",))[0] == {"enum": ["a", "b"]}
    assert type_names({"enum": ["a", 1]}) == {"string", "integer"}
    assert type_names({"const": True}) == {"boolean"}
    assert at_path({"type": "object"}, ("anything",)) == ({}, None)
    assert at_path({"type": "array"}, (3,)) == ({}, None)
    assert at_path({"type": "object", "additionalProperties": {"type": "string"}}, ("k",))[0] == {
        "type": "string"
    }
    assert flow_problem({"type": "integer"}, {"type": "number"}) is None
    assert (
        flow_problem(
            {"type": "array", "items": {"type": "string"}},
            {"type": "array", "items": {"type": "integer"}},
        )
        == "array items: string cannot flow into integer"
    )


def test_a_host_serving_a_condition_imports_the_expression_library_only_when_it_runs(
    home_dir: Path, plugin_dirs: dict[str, Path], no_leftover_workers: None
) -> None:
    import subprocess
    import sys

    from support import subprocess_coverage

    comp = composition_from_data(
        {
            "name": "demo.cond",
            "input_schema": {"type": "object", "properties": {"loud": {"type": "boolean"}}},
            "steps": [
                {
                    "id": "u",
                    "tool": "textkit.upper",
                    "args": {"text": "x"},
                    "when": "input.loud",
                    "default": "quiet",
                }
            ],
        }
    )
    with CompositionStore(Home(home_dir), create=True) as store:
        store.add(comp)
    script = f"""
import asyncio, sys
from mcphost.host import Host, HostConfig
async def go():
    async with Host({str(home_dir)!r}, config=HostConfig(allow_unsigned=True, isolation="rlimits"),
                    plugin_dirs=[{str(plugin_dirs["textkit"])!r}], environment=False) as host:
        assert "demo.cond" in {{t.name for t in host.tools()}}
        print("before", "jmespath" in sys.modules)
        print(await host.call("demo.cond", {{"loud": True}}))
        print("after", "jmespath" in sys.modules)
asyncio.run(go())
"""
    import os

    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **subprocess_coverage.environment()},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["before", "False", "X", "after", "True"]
