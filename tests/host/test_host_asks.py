"""A tool's sampling and elicitation asks made through ``Host.call`` and ``Host.stream``:
answered by the app's handlers, refused clearly without one, cancelled with the call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mcphost.host import Host, HostConfig, PluginSource
from mcphost.sdk.errors import AskUnsupported, ToolTimeout

SOURCE = """
    import asyncio
    from mcphost.sdk import Context, Plugin

    plugin = Plugin("asker")

    @plugin.tool
    async def poem(topic: str, ctx: Context) -> str:
        got = await ctx.sample(topic, max_tokens=10)
        return got.text

    @plugin.tool
    def poem_sync(topic: str, ctx: Context) -> str:
        return ctx.sample_sync(topic, max_tokens=10).text

    @plugin.tool
    async def name(ctx: Context) -> str:
        got = await ctx.elicit("Your name?", {"properties": {"name": {"type": "string"}}})
        return got.content["name"] if got.accepted else got.action

    @plugin.tool
    async def names(ctx: Context):
        for i in range(2):
            got = await ctx.elicit(f"Name {i}?", {"properties": {"name": {"type": "string"}}})
            yield got.content["name"]

    @plugin.tool
    def wait_sync(ctx: Context) -> str:
        got = ctx.elicit_sync("never", {"properties": {"x": {"type": "string"}}})
        return got.action

    @plugin.tool
    async def wait_async(ctx: Context) -> str:
        try:
            await ctx.elicit("never", {"properties": {"x": {"type": "string"}}})
        except asyncio.CancelledError:
            (ctx.data_dir / "cancelled").write_text("yes")
            raise
        return "answered"
"""


def _host(home: Path, source: PluginSource, config: HostConfig, **handlers: Any) -> Host:
    return Host(
        home, config=config, sources=[source], environment=False, registry=False, **handlers
    )


async def test_the_apps_handlers_answer_asks_of_calls_and_streams(
    home_dir: Path,
    write_plugin_source: Callable[..., PluginSource],
    host_config: Callable[..., HostConfig],
) -> None:
    seen: list[dict[str, Any]] = []

    async def sampling(params: dict[str, Any]) -> dict[str, Any]:
        seen.append(params)
        text = params["messages"][0]["content"]["text"]
        return {"role": "assistant", "content": {"type": "text", "text": text[::-1]}, "model": "m"}

    counter = iter(["ada", "bob", "cy"])

    async def elicitation(params: dict[str, Any]) -> dict[str, Any]:
        seen.append(params)
        return {"action": "accept", "content": {"name": next(counter)}}

    source = write_plugin_source("asker", SOURCE)
    host = _host(
        home_dir, source, host_config(), sampling_handler=sampling, elicitation_handler=elicitation
    )
    async with host:
        assert await host.call("asker.poem", {"topic": "abc"}) == "cba"
        assert seen[0] == {
            "messages": [{"role": "user", "content": {"type": "text", "text": "abc"}}],
            "maxTokens": 10,
        }
        assert await host.call("asker.poem_sync", {"topic": "xyz"}) == "zyx"
        assert await host.call("asker.name") == "ada"
        assert [x async for x in host.stream("asker.names")] == ["bob", "cy"]


async def test_a_call_with_no_client_and_no_handler_gets_a_clear_error(
    home_dir: Path,
    write_plugin_source: Callable[..., PluginSource],
    host_config: Callable[..., HostConfig],
) -> None:
    source = write_plugin_source("asker", SOURCE)
    async with _host(home_dir, source, host_config()) as host:
        with pytest.raises(AskUnsupported) as err:
            await host.call("asker.poem", {"topic": "abc"})
        assert "came from no MCP client" in err.value.message
        assert "Host(sampling_handler=...)" in err.value.message
        with pytest.raises(AskUnsupported) as err:
            await host.call("asker.poem_sync", {"topic": "abc"})
        assert "elicitation_handler" not in err.value.message
    # Only one handler given: the other kind is still refused, naming its option.

    async def sampling(params: dict[str, Any]) -> dict[str, Any]:
        return {"role": "assistant", "content": {"type": "text", "text": "x"}, "model": "m"}

    async with _host(home_dir, source, host_config(), sampling_handler=sampling) as host:
        with pytest.raises(AskUnsupported) as err:
            await host.call("asker.name")
        assert "Host(elicitation_handler=...)" in err.value.message


@pytest.mark.parametrize("tool", ["wait_async", "wait_sync"])
async def test_an_unanswered_ask_ends_with_the_calls_deadline_and_its_handler_is_cancelled(
    home_dir: Path,
    write_plugin_source: Callable[..., PluginSource],
    host_config: Callable[..., HostConfig],
    tool: str,
) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def elicitation(params: dict[str, Any]) -> dict[str, Any]:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    source = write_plugin_source("asker", SOURCE)
    async with _host(home_dir, source, host_config(), elicitation_handler=elicitation) as host:
        with pytest.raises(ToolTimeout):
            await host.call(f"asker.{tool}", timeout=1.0)
        assert started.is_set()
        await asyncio.wait_for(cancelled.wait(), 10)


async def test_cancelling_a_call_cancels_the_tools_wait_for_its_answer(
    home_dir: Path,
    write_plugin_source: Callable[..., PluginSource],
    host_config: Callable[..., HostConfig],
) -> None:
    started = asyncio.Event()

    async def elicitation(params: dict[str, Any]) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(3600)
        return {}

    source = write_plugin_source("asker", SOURCE)
    async with _host(home_dir, source, host_config(), elicitation_handler=elicitation) as host:
        task = asyncio.create_task(host.call("asker.wait_async"))
        await asyncio.wait_for(started.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        marker = home_dir / "data" / "asker" / "cancelled"
        for _ in range(200):
            if marker.exists():
                break
            await asyncio.sleep(0.05)
        assert marker.read_text() == "yes"
