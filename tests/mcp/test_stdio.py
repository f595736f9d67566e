"""``mcphost serve`` over stdio, driven by the official MCP Python SDK client."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError
from support import subprocess_coverage
from support.waiting import wait_until


def params(argv: list[str]) -> StdioServerParameters:
    # The client gives the server a few variables only; coverage's are added.
    env = subprocess_coverage.environment()
    return StdioServerParameters(command=argv[0], args=argv[1:], env=env)


async def test_official_client_settles_on_the_newest_revision_and_calls_example_tools(
    serve_argv: list[str],
) -> None:
    async with Client(params(serve_argv)) as client:
        assert client.protocol_version == "2026-07-28"
        caps = client.server_capabilities
        assert caps.tools is not None and caps.tools.list_changed is True
        listed = await client.list_tools()
        names = {t.name for t in listed.tools}
        assert {"textkit.upper", "textkit.count", "mathkit.stats"} <= names
        upper = next(t for t in listed.tools if t.name == "textkit.upper")
        assert upper.description == "Upper-case the text."
        assert upper.input_schema["properties"]["text"]["type"] == "string"
        # A non-object output is wrapped as {"result": ...}, schema and value alike.
        assert upper.output_schema is not None
        assert upper.output_schema["properties"]["result"]["type"] == "string"

        res = await client.call_tool("textkit.upper", {"text": "hi"})
        assert not res.is_error
        assert res.structured_content == {"result": "HI"}
        assert isinstance(res.content[0], types.TextContent)
        assert res.content[0].text == "HI"

        counted = await client.call_tool("textkit.count", {"text": "a b\nc"})
        assert counted.structured_content == {"words": 3, "characters": 5, "lines": 2}


@pytest.mark.filterwarnings(
    "ignore::mcp.shared.exceptions.MCPDeprecationWarning"
)  # ping exists only before 2026
async def test_handshake_era_client_gets_2025_11_25_and_the_same_tools(
    serve_argv: list[str],
) -> None:
    async with Client(params(serve_argv), mode="legacy") as client:
        assert client.protocol_version == "2025-11-25"
        assert client.server_info is not None and client.server_info.name == "mcphost"
        await client.send_ping()
        res = await client.call_tool("mathkit.add", {"a": 2, "b": 3})
        assert res.structured_content == {"result": 5.0}


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_tools_own_failure_is_a_result_with_is_error_and_an_unknown_tool_is_32602(
    serve_argv: list[str], mode: str
) -> None:
    async with Client(params(serve_argv), mode=mode) as client:
        res = await client.call_tool("mathkit.stats", {"values": []})
        assert res.is_error
        assert isinstance(res.content[0], types.TextContent)
        assert "stats needs at least one value" in res.content[0].text
        assert "empty_input" in res.content[0].text
        with pytest.raises(MCPError) as err:
            await client.call_tool("nosuch.tool", {})
        assert err.value.error.code == -32602
        assert "nosuch.tool" in err.value.error.message
        bad = await client.call_tool("mathkit.add", {"a": "x"})
        assert bad.is_error  # invalid arguments: the model can correct itself
        assert isinstance(bad.content[0], types.TextContent)
        assert bad.content[0].text.startswith("error [invalid_arguments]: invalid arguments")
        assert "mathkit.add" not in bad.content[0].text  # the call names it already
        assert bad.meta is not None  # the host's own errors come whole too
        assert bad.meta["mcphost/error"]["code"] == "invalid_arguments"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_progress_arrives_for_each_streamed_item_and_from_context_progress(
    serve_argv: list[str], mode: str
) -> None:
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    async with Client(params(serve_argv), mode=mode) as client:
        res = await client.call_tool("textkit.count_to", {"n": 4}, progress_callback=on_progress)
        assert res.structured_content == {"result": [0, 1, 2, 3]}
        assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
        seen.clear()
        res = await client.call_tool(
            "mathkit.primes_below", {"limit": 20}, progress_callback=on_progress
        )
        assert res.structured_content == {"result": [2, 3, 5, 7, 11, 13, 17, 19]}
        assert seen == [(1, 1)]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_a_cancelled_long_call_is_cancelled_in_its_worker_and_the_server_keeps_answering(
    mcphost_cmd: list[str], mcp_home: Path, chatty_dir: Path, mode: str
) -> None:
    argv = [*mcphost_cmd, "--home", str(mcp_home), "serve", "--no-environment"]
    data = mcp_home / "data" / "textkit"

    async def go() -> None:
        async with Client(params([*argv, "--plugin-dir", str(chatty_dir)]), mode=mode) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.call_tool, "textkit.watched_sleep", {"seconds": 60})
                await wait_until(
                    (data / "started-sleep").exists, 20, "the call started"
                )  # the call runs in the worker
                tg.cancel_scope.cancel()
            await wait_until(
                (data / "cancelled-sleep").exists, 20, "the call was cancelled"
            )  # and is cancelled there
            res = await client.call_tool("textkit.upper", {"text": "after"})
            assert res.structured_content == {"result": "AFTER"}

    asyncio.run(asyncio.wait_for(go(), 60))


@pytest.mark.filterwarnings(
    "ignore::mcp.shared.exceptions.MCPDeprecationWarning"
)  # logging/setLevel, as above
async def test_plugin_logs_reach_a_client_that_set_a_log_level(serve_argv: list[str]) -> None:
    logs: list[types.LoggingMessageNotificationParams] = []

    async def on_log(p: types.LoggingMessageNotificationParams) -> None:
        logs.append(p)

    async with Client(params(serve_argv), mode="legacy", logging_callback=on_log) as client:
        await client.set_logging_level("info")
        await client.call_tool("textkit.sleep", {"seconds": 0.01})
        with anyio.fail_after(10):
            while not logs:
                await anyio.sleep(0.01)
    assert logs[0].logger == "textkit" and logs[0].level == "info"
    assert "sleeping" in str(logs[0].data)


async def test_2026_client_gets_plugin_logs_only_when_it_opts_in_per_request(
    serve_argv: list[str],
) -> None:
    logs: list[Any] = []

    async def on_log(p: types.LoggingMessageNotificationParams) -> None:
        logs.append(p)

    async with Client(params(serve_argv), logging_callback=on_log) as client:
        await client.call_tool("textkit.sleep", {"seconds": 0.01})
        await client.call_tool("textkit.upper", {"text": "x"})
        assert logs == []
    async with Client(params(serve_argv), logging_callback=on_log, log_level="info") as c2:
        res = await c2.call_tool("textkit.sleep", {"seconds": 0.2})
        assert not res.is_error
        # A call's log line reaches the client before its answer: the empty list
        # above was not checked too early.
        assert [(p.logger, p.level, p.data) for p in logs] == [("textkit", "info", "sleeping 0.2s")]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_installing_a_plugin_with_the_cli_shows_up_as_tools_list_changed(
    serve_argv: list[str],
    mcphost_cmd: list[str],
    mcp_home: Path,
    example_wheels: dict[str, Path],
    mode: str,
) -> None:
    install = [
        *mcphost_cmd,
        "--home",
        str(mcp_home),
        "plugin",
        "install",
        "--yes",
        str(example_wheels["notes"]),
    ]

    changed = anyio.Event()

    async def on_message(msg: Any) -> None:
        if isinstance(msg, types.ToolListChangedNotification):
            changed.set()

    async with Client(params(serve_argv), mode=mode, message_handler=on_message) as client:
        before = {t.name for t in (await client.list_tools()).tools}
        assert "notes.save" not in before
        if mode == "auto":
            async with client.listen(tools_list_changed=True) as sub:
                await anyio.run_process(install)
                with anyio.fail_after(20):
                    event = await sub.__anext__()
                assert type(event).__name__ == "ToolsListChanged"
        else:
            await anyio.run_process(install)
            with anyio.fail_after(20):
                await changed.wait()
        after = {t.name for t in (await client.list_tools(cache_mode="refresh")).tools}
        assert "notes.save" in after
        res = await client.call_tool("notes.save", {"title": "t", "body": "b"})
        assert res.structured_content == {"result": "t"}
