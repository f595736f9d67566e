"""The host keeps each called name's route; whatever changes the tools a name reaches
(a swap, a new plugin, a removal, a restarted worker) makes the next call look again.
Real workers."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from support.sources import directory_source

from mcphost.host import Host
from mcphost.host.config import HostConfig
from mcphost.sdk.errors import PluginNotFound, ToolNotFound

V1 = """
from mcphost.sdk import Plugin

plugin = Plugin("shifty")


@plugin.tool
def which() -> str:
    return "v1"


@plugin.tool(batch=True)
def count(items: list[int]) -> list[str]:
    # A batch tool here; an ordinary one in v2...
    return [f"v1:{i}" for i in items]


@plugin.tool
def old() -> str:
    return "old"
"""

V2 = """
import os
from mcphost.sdk import Plugin

plugin = Plugin("shifty")


@plugin.tool
def which() -> str:
    return "v2"


@plugin.tool
def count(items: list[int]) -> list[str]:
    return [f"v2 saw {len(items)}"]


@plugin.tool
def new() -> str:
    return "new"


@plugin.tool
def pid() -> int:
    return os.getpid()
"""

OTHER = """
from mcphost.sdk import Plugin

plugin = Plugin("other")


@plugin.tool
def hello() -> str:
    return "hello"
"""


def _host(tmp_path: Path) -> Host:
    config = HostConfig(allow_unsigned=True, isolation="rlimits")
    source = directory_source(tmp_path / "v1", "shifty", V1)
    return Host(
        tmp_path / "home", config=config, sources=[source], environment=False, registry=False
    )


async def test_calls_reach_what_a_swap_brings_and_lose_what_it_takes(tmp_path: Path) -> None:
    async with _host(tmp_path) as host:
        assert await host.call("shifty.which") == "v1"
        assert await host.call("shifty.old") == "old"
        assert await host.call("shifty.count", {"items": [1, 2]}) == ["v1:1", "v1:2"]
        v2 = directory_source(tmp_path / "v2", "shifty", V2, version="2.0.0")
        assert await host.activate(v2) == "1.0.0"
        assert await host.call("shifty.which") == "v2"
        assert await host.call("shifty.new") == "new"
        # Not batched any more: the call reaches v2's tool as it is.
        assert await host.call("shifty.count", {"items": [1, 2]}) == ["v2 saw 2"]
        with pytest.raises(ToolNotFound, match="has no tool 'old'"):
            await host.call("shifty.old")

        # A worker that dies is replaced; its calls go to the new one.
        first = await host.call("shifty.pid")
        os.kill(first, signal.SIGKILL)
        for _ in range(200):
            try:
                again = await host.call("shifty.pid")
            except Exception:  # the call in flight when it died, or a restart under way
                continue
            if again != first:
                break
        assert again != first

        # A plugin added later is found; a removed one is not.
        assert await host.activate(directory_source(tmp_path / "o", "other", OTHER)) is None
        assert await host.call("other.hello") == "hello"
        assert await host.call("shifty.which") == "v2"
        await host.deactivate("shifty")
        with pytest.raises(PluginNotFound):
            await host.call("shifty.which")
        assert await host.call("other.hello") == "hello"
