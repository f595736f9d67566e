"""Whose log lines go where: a call's lines to the session that made the call, lines
outside any call (what a plugin prints) to the server log, and to sessions only with
``serve --forward-plugin-logs``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from support.waiting import wait_until

pytestmark = pytest.mark.filterwarnings(
    "ignore::mcp.shared.exceptions.MCPDeprecationWarning"  # logging/setLevel before 2026
)


def inflight(host: Any, plugin: str) -> int:
    return sum(s.get("inflight") or 0 for s in host.stats() if s["plugin"] == plugin)


class Logs:
    """The log notifications one client received."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    async def __call__(self, p: types.LoggingMessageNotificationParams) -> None:
        self.lines.append(str(p.data))

    def having(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]


async def test_over_http_each_session_gets_only_its_own_calls_log_lines(
    mcp_home: Path, chatty_dir: Path, embedded: Any
) -> None:
    a, b, idle = Logs(), Logs(), Logs()
    async with (
        embedded(mcp_home, [chatty_dir], forward_plugin_logs=True) as served,
        served.client(mode="legacy", logging_callback=a) as ca,
        served.client(mode="legacy", logging_callback=b) as cb,
        served.client(mode="legacy", logging_callback=idle) as cidle,
    ):
        for c in (ca, cb, cidle):
            await c.set_logging_level("info")
        # Lines outside any call are forwarded (the operator asked for it) to every
        # session: once the idle one has them, its GET stream is surely open.
        await ca.call_tool("textkit.shout", {"lines": 3, "width": 12})
        await wait_until(lambda: len(idle.having("x" * 12)) == 3, 20.0, "three lines logged")

        async with anyio.create_task_group() as tg:
            # B's call of the same plugin is running while A's call logs.
            tg.start_soon(cb.call_tool, "textkit.sleep", {"seconds": 3})
            await wait_until(
                lambda: inflight(served.host, "textkit") == 1, 20.0, "one call in flight"
            )
            res = await ca.call_tool("textkit.chatter", {"lines": 2})
            assert res.structured_content == {"result": 2}
        # B's answer came after everything sent to it while A's call ran.
        assert a.having("chatter line") == ["chatter line 0 of 2", "chatter line 1 of 2"]
        assert b.having("chatter line") == []
        assert idle.having("chatter line") == []
        assert b.having("sleeping") == ["sleeping 3.0s"]
        assert a.having("sleeping") == [] and idle.having("sleeping") == []


async def test_a_session_below_its_own_log_level_gets_none_of_its_calls_lines(
    mcp_home: Path, chatty_dir: Path, embedded: Any
) -> None:
    quiet, loud = Logs(), Logs()
    async with (
        embedded(mcp_home, [chatty_dir]) as served,
        served.client(mode="legacy", logging_callback=quiet) as cq,
        served.client(mode="legacy", logging_callback=loud) as cl,
    ):
        await cq.set_logging_level("error")
        await cl.set_logging_level("debug")
        await cq.call_tool("textkit.chatter", {"lines": 1})
        await cl.call_tool("textkit.chatter", {"lines": 1})
        assert quiet.lines == []
        assert loud.having("chatter line") == ["chatter line 0 of 1"]


@pytest.mark.parametrize("forward", [False, True])
async def test_over_stdio_what_a_plugin_prints_reaches_the_client_only_when_forwarded(
    mcp_home: Path, chatty_dir: Path, mcphost_cmd: list[str], tmp_path: Path, forward: bool
) -> None:
    argv = [
        *mcphost_cmd,
        "-v",  # the server log shows info lines, so the test can see them arrive
        "--home",
        str(mcp_home),
        "serve",
        "--no-environment",
        "--plugin-dir",
        str(chatty_dir),
        *(["--forward-plugin-logs"] if forward else []),
    ]
    server_log = tmp_path / "serve.log"

    logs = Logs()
    with server_log.open("w") as err:
        transport = stdio_client(StdioServerParameters(command=argv[0], args=argv[1:]), err)
        async with Client(transport, mode="legacy", logging_callback=logs) as c:
            await c.set_logging_level("info")
            await c.call_tool("textkit.shout", {"lines": 3, "width": 7})
            # The server log has the printed lines: they were handled by the host.
            await wait_until(
                lambda: server_log.read_text().count("x" * 7) >= 3, 20, "three lines in the log"
            )
            res = await c.call_tool("textkit.chatter", {"lines": 1})
            assert res.structured_content == {"result": 1}
            if forward:
                await wait_until(lambda: len(logs.having("x" * 7)) == 3, 20.0, "three lines logged")
            else:
                assert logs.having("x" * 7) == []
            assert logs.having("chatter line") == ["chatter line 0 of 1"]
