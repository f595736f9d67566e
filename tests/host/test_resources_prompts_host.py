"""Resources, prompts and completions through a real Host and worker: deadlines,
cancellation, updates and URI clashes at install and swap."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mcphost.host import Host, HostEvent, PluginSource, SyncHost
from mcphost.host.config import PluginSettings
from mcphost.sdk.errors import HandshakeRefused, ResourceNotFound, ToolTimeout

SLOW = """
import asyncio
import base64
from mcphost.sdk import Context, Plugin

plugin = Plugin("{name}")


@plugin.resource("{scheme}://slow")
async def slow(ctx: Context) -> str:
    (ctx.data_dir / "started").write_text("yes")
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        (ctx.data_dir / "cancelled").write_text("yes")
        raise
    return "late"


@plugin.resource("{scheme}://item/{{key}}")
def item(key: str) -> str:
    return key.upper()


@plugin.tool
def touch(uri: str, ctx: Context) -> str:
    ctx.notify_resource_updated(uri)
    return uri


@plugin.prompt
def hello(who: str) -> str:
    return "hello " + who
"""


def plugin_source(write: Callable[..., PluginSource], name: str, scheme: str, **kw: Any) -> Any:
    return write(name, SLOW.format(name=name, scheme=scheme), **kw)


async def test_a_resource_read_has_the_call_deadline_and_is_cancelled_in_the_worker(
    make_host: Callable[..., Host], write_plugin_source: Callable[..., PluginSource]
) -> None:
    src = plugin_source(write_plugin_source, "slowres", "slow")
    async with make_host(sources=[src]) as host:
        with pytest.raises(ToolTimeout):
            await host.read_resource("slow://slow", timeout=0.5)
        data = host.home.data_dir / "slowres"
        for _ in range(200):
            if (data / "cancelled").exists():
                break
            await asyncio.sleep(0.05)
        assert (data / "cancelled").exists()
        # The worker serves on: a template read and a prompt answer.
        got = await host.read_resource("slow://item/abc")
        assert got["contents"][0]["text"] == "ABC"
        prompt = await host.get_prompt("slowres.hello", {"who": "you"})
        assert prompt["messages"][0]["content"]["text"] == "hello you"


async def test_updates_of_own_uris_become_events_and_others_are_ignored(
    make_host: Callable[..., Host], write_plugin_source: Callable[..., PluginSource]
) -> None:
    src = plugin_source(write_plugin_source, "toucher", "tch")
    async with make_host(sources=[src]) as host:
        events: list[HostEvent] = []
        host.add_listener(lambda e: events.append(e) if e.kind == "resource_updated" else None)
        await host.call("toucher.touch", {"uri": "tch://item/x"})
        await host.call("toucher.touch", {"uri": "elsewhere://item/x"})
        await host.call("toucher.touch", {"uri": "tch://slow"})
        for _ in range(100):
            if len(events) >= 2:
                break
            await asyncio.sleep(0.02)
        assert [(e.plugin, e.message) for e in events] == [
            ("toucher", "tch://item/x"),
            ("toucher", "tch://slow"),
        ]


async def test_a_swap_to_a_version_whose_uris_clash_is_refused_and_changes_nothing(
    make_host: Callable[..., Host], write_plugin_source: Callable[..., PluginSource]
) -> None:
    one = plugin_source(write_plugin_source, "one", "one")
    two = plugin_source(write_plugin_source, "two", "two")
    two_v2 = plugin_source(write_plugin_source, "two", "one", version="2.0.0")
    async with make_host(sources=[one, two]) as host:
        await host.list_resources()  # both workers run
        with pytest.raises(HandshakeRefused) as err:
            await host.activate(two_v2)
        assert "'one'" in err.value.message and "two 2.0.0" in err.value.message
        assert {p.name: p.version for p in host.plugins()} == {"one": "1.0.0", "two": "1.0.0"}
        got = await host.read_resource("two://item/k")
        assert got["contents"][0]["text"] == "K"
        with pytest.raises(ResourceNotFound):
            await host.read_resource("three://item/k")


async def test_a_plugin_whose_bare_prompt_takes_a_running_plugins_name_is_refused(
    make_host: Callable[..., Host], write_plugin_source: Callable[..., PluginSource]
) -> None:
    one = plugin_source(write_plugin_source, "one", "one")
    two = plugin_source(write_plugin_source, "two", "two")
    bare = {"one": PluginSettings(expose="bare"), "two": PluginSettings(expose="bare")}
    async with make_host(sources=[one], plugins=bare) as host:
        assert [p["name"] for p in await host.list_prompts()] == ["hello"]
        # two's prompt "hello" would take the name one's prompt has: refused, naming both.
        with pytest.raises(HandshakeRefused) as err:
            await host.activate(two)
        message = err.value.message
        assert "prompt name 'hello'" in message
        assert "prompt hello of plugin one" in message and "prompt hello of plugin two" in message
        assert 'expose = "prefixed"' in message  # what to do about it
        assert [p.name for p in host.plugins()] == ["one"]
        got = await host.get_prompt("hello", {"who": "you"})
        assert got["messages"][0]["content"]["text"] == "hello you"


def test_a_sync_host_reads_resources_gets_prompts_and_completes(
    home_dir: Path, write_plugin_source: Callable[..., PluginSource]
) -> None:
    src = plugin_source(write_plugin_source, "synced", "syn")
    (home_dir / "config.toml").write_text('allow_unsigned = true\nisolation = "rlimits"\n')
    with SyncHost(home_dir, sources=[src], environment=False, registry=False) as host:
        assert [r["uri"] for r in host.list_resources()] == ["syn://slow"]
        assert [t["uriTemplate"] for t in host.list_resource_templates()] == ["syn://item/{key}"]
        assert host.read_resource("syn://item/q")["contents"][0]["text"] == "Q"
        assert [p["name"] for p in host.list_prompts()] == ["synced.hello"]
        got = host.get_prompt("synced.hello", {"who": "me"})
        assert got["messages"][0]["content"]["text"] == "hello me"
        done = host.complete({"type": "ref/prompt", "name": "synced.hello"}, {"name": "who"})
        assert done == {"completion": {"values": [], "total": 0, "hasMore": False}}


BLOBS = """
from mcphost.sdk import Plugin

plugin = Plugin("blobs")


@plugin.resource("blobs://one", mime_type="application/octet-stream")
def one() -> bytes:
    return bytes(range(256)) * 4096
"""


async def test_a_binary_resource_crosses_the_channel_as_bytes_and_reads_as_base64(
    make_host: Callable[..., Host], write_plugin_source: Callable[..., PluginSource]
) -> None:
    """The worker sends the bytes as they are (MessagePack binary: a third smaller than
    base64, and not encoded on its loop); the host's read gives MCP's base64 text."""
    data = bytes(range(256)) * 4096
    async with make_host(sources=[write_plugin_source("blobs", BLOBS)]) as host:
        read = await host.read_resource("blobs://one")
        assert read["contents"] == [
            {
                "uri": "blobs://one",
                "mimeType": "application/octet-stream",
                "blob": base64.b64encode(data).decode("ascii"),
            }
        ]
        worker = host._supervisors["blobs"].worker
        assert worker is not None
        wire = await worker.call("blobs://one", {}, timeout=10, kind="resource")
        assert wire["contents"][0]["blob"] == data
