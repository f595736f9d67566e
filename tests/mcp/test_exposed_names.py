"""Tool names as the operator exposes them (``[plugins.NAME] expose``, renames and
description overrides), through the official MCP client over stdio and HTTP, through
``Host.call`` and compositions; clashes are refused naming both plugins."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError
from support import subprocess_coverage
from support.cli import mcphost_command
from support.waiting import wait_until
from test_resources_prompts import embedded_sources, write_plugin

from mcphost.host.compose import composition_from_data
from mcphost.host.config import HostConfig, PluginSettings
from mcphost.sdk.errors import CompositionInvalid, NameClash

NAMING = """
[plugins.textkit]
expose = "bare"

[plugins.mathkit.tools.is_prime]
name = "prime"
description = "Tell whether n is a prime number."
"""


@pytest.fixture
def named_home(mcp_home: Path) -> Path:
    with (mcp_home / "config.toml").open("a") as f:
        f.write(NAMING)
    return mcp_home


def _text(result: Any) -> str:
    return str(result.content[0].text)


async def test_bare_and_renamed_tools_over_stdio_and_a_live_rename(
    named_home: Path, serve_argv: list[str]
) -> None:
    env = subprocess_coverage.environment()
    params = StdioServerParameters(command=serve_argv[0], args=serve_argv[1:], env=env)
    async with Client(params) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        assert {"upper", "echo", "count", "prime", "mathkit.add"} <= set(listed)
        assert "textkit.upper" not in listed and "mathkit.is_prime" not in listed
        assert listed["upper"].description == "Upper-case the text."
        assert listed["prime"].description == "Tell whether n is a prime number."
        assert _text(await client.call_tool("upper", {"text": "hi"})) == "HI"
        prime = await client.call_tool("prime", {"n": 97})
        assert prime.structured_content == {"result": True}
        # Only the exposed name is offered to MCP clients.
        with pytest.raises(MCPError, match=r"unknown tool 'textkit\.upper'"):
            await client.call_tool("textkit.upper", {"text": "hi"})

        # The operator renames it again while serving: clients hear list_changed.
        async with client.listen(tools_list_changed=True) as sub:
            proc = await anyio.to_thread.run_sync(
                lambda: subprocess.run(
                    [
                        *mcphost_command(),
                        "--home",
                        str(named_home),
                        "config",
                        "set",
                        "plugins.mathkit.tools.is_prime.name",
                        "is_prime_number",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
            )
            assert proc.returncode == 0, proc.stderr
            assert "running hosts apply it within a second" in proc.stdout
            with anyio.fail_after(20):
                event = await sub.__anext__()
            assert type(event).__name__ == "ToolsListChanged"
        names = {t.name for t in (await client.list_tools()).tools}
        assert "is_prime_number" in names and "prime" not in names
        done = await client.call_tool("is_prime_number", {"n": 91})
        assert done.structured_content == {"result": False}


async def test_bare_names_over_http_host_call_and_compositions(
    named_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    dirs = [plugin_dirs["textkit"], plugin_dirs["mathkit"]]
    async with embedded(named_home, dirs) as served:
        host = served.host
        # Host.call takes the exposed name and the canonical <plugin>.<tool> alike.
        assert await host.call("upper", {"text": "a"}) == "A"
        assert await host.call("textkit.upper", {"text": "b"}) == "B"
        assert await host.call("prime", {"n": 7}) is True
        assert await host.call("mathkit.is_prime", {"n": 8}) is False
        comp = composition_from_data(
            {
                "name": "demo.shout_prime",
                "input_schema": {
                    "type": "object",
                    "properties": {"text": {"type": "string"}, "n": {"type": "integer"}},
                    "required": ["text", "n"],
                },
                "steps": [
                    {"id": "up", "tool": "upper", "args": {"text": "$input.text"}},
                    {"id": "p", "tool": "prime", "args": {"n": "$input.n"}},
                ],
                "output": {"text": "$steps.up.output", "prime": "$steps.p.output"},
            }
        )
        host.add_composition(comp)
        async with served.client() as client:
            listed = {t.name: t for t in (await client.list_tools()).tools}
            assert {"upper", "prime", "demo.shout_prime"} <= set(listed)
            assert listed["prime"].description == "Tell whether n is a prime number."
            assert _text(await client.call_tool("upper", {"text": "hi"})) == "HI"
            res = await client.call_tool("demo.shout_prime", {"text": "x", "n": 13})
            assert res.structured_content == {"text": "X", "prime": True}


async def test_a_clash_at_config_reload_is_refused_naming_both_plugins(
    named_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    dirs = [plugin_dirs["textkit"], plugin_dirs["mathkit"]]
    async with embedded(named_home, dirs) as served:
        host = served.host
        clashing = (
            "allow_unsigned = true\n"
            '[plugins.textkit]\nexpose = "bare"\n'
            '[plugins.mathkit.tools.is_prime]\nname = "upper"\n'
        )
        with pytest.raises(NameClash) as err:
            host.reconfigure(HostConfig.model_validate(_toml(clashing)))
        assert err.value.code == "name_clash"
        assert "tool upper of plugin textkit" in err.value.message
        assert "tool is_prime of plugin mathkit" in err.value.message

        # The same change in the file: refused, the host keeps its names.
        (named_home / "config.toml").write_text(clashing)
        await wait_until(lambda: host.config_error is not None, 20, "the change refused")
        assert "tool upper of plugin textkit" in str(host.config_error)
        assert "tool is_prime of plugin mathkit" in str(host.config_error)
        async with served.client() as client:
            names = {t.name for t in (await client.list_tools()).tools}
        assert {"upper", "prime"} <= names
        assert await host.call("upper", {"text": "still"}) == "STILL"
        assert await host.call("prime", {"n": 5}) is True


def _toml(text: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(text)


async def test_a_plugin_added_while_serving_whose_name_clashes_is_refused(
    named_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    from mcphost.host import discover_directory

    with (named_home / "config.toml").open("a") as f:
        f.write('\n[plugins.notes.tools.save]\nname = "upper"\n')
    async with embedded(named_home, [plugin_dirs["textkit"]]) as served:
        with pytest.raises(NameClash) as err:
            await served.host.activate(discover_directory(plugin_dirs["notes"])[0])
        assert "tool upper of plugin textkit" in err.value.message
        assert "tool save of plugin notes" in err.value.message
        assert "notes" not in {p.name for p in served.host.plugins()}
        async with served.client() as client:
            names = {t.name for t in (await client.list_tools()).tools}
        assert "upper" in names and not any(n.startswith("notes.") for n in names)


MCP1_CLIENT = r"""
import json, sys
import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client


async def exercise(session):
    await session.initialize()
    tools = {t.name: t.description for t in (await session.list_tools()).tools}
    up = await session.call_tool("upper", {"text": "old"})
    prime = await session.call_tool("prime", {"n": 11})
    return {"tools": tools, "upper": up.content[0].text, "prime": prime.structuredContent}


async def main():
    target = json.loads(sys.argv[1])
    if isinstance(target, list):
        params = StdioServerParameters(command=target[0], args=target[1:])
        async with stdio_client(params) as (r, w), ClientSession(r, w) as s:
            print(json.dumps(await exercise(s)))
    else:
        headers = {"Authorization": "Bearer " + target["token"]}
        async with (
            streamablehttp_client(target["url"], headers=headers) as (r, w, _),
            ClientSession(r, w) as s,
        ):
            print(json.dumps(await exercise(s)))


anyio.run(main)
"""


def _mcp1(target: Any) -> dict[str, Any]:
    """Run the ``mcp`` 1.x client (its own virtualenv, as test_mcp1_client.py) on
    ``target``: a stdio argv, or {"url", "token"}."""
    import json
    import sys

    python = Path(sys.prefix) / "mcp1" / "bin" / "python"
    if not python.exists():
        pytest.fail(f"no mcp 1.x client in {python.parent.parent}: see test_mcp1_client.py")
    out = subprocess.run(
        [str(python), "-c", MCP1_CLIENT, json.dumps(target)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _check_mcp1(result: dict[str, Any]) -> None:
    assert result["tools"]["prime"] == "Tell whether n is a prime number."
    assert "upper" in result["tools"] and "textkit.upper" not in result["tools"]
    assert result["upper"] == "OLD"
    assert result["prime"] == {"result": True}


def test_bare_names_with_the_1x_client_over_stdio(named_home: Path, serve_argv: list[str]) -> None:
    _check_mcp1(_mcp1(serve_argv))


async def test_bare_names_with_the_1x_client_over_http(
    named_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    dirs = [plugin_dirs["textkit"], plugin_dirs["mathkit"]]
    async with embedded(named_home, dirs) as served:
        target = {"url": served.front.url, "token": served.token}
        _check_mcp1(await anyio.to_thread.run_sync(_mcp1, target))


async def test_a_composition_under_a_tools_exposed_name_is_refused(
    mcp_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    with (mcp_home / "config.toml").open("a") as f:
        f.write('\n[plugins.textkit.tools.upper]\nname = "demo.upper"\n')
    async with embedded(mcp_home, [plugin_dirs["textkit"]]) as served:
        comp = composition_from_data(
            {
                "name": "demo.upper",
                "steps": [{"id": "s", "tool": "textkit.echo", "args": {"text": "x"}}],
            }
        )
        # A renamed tool's group counts as taken, as a plugin's name does.
        with pytest.raises(CompositionInvalid) as err:
            served.host.add_composition(comp)
        assert "'demo' is a plugin's name" in err.value.message
        assert await served.host.call("demo.upper", {"text": "x"}) == "X"


async def test_a_rename_onto_a_compositions_name_is_refused_naming_both(
    mcp_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    async with embedded(mcp_home, [plugin_dirs["textkit"]]) as served:
        host = served.host
        host.add_composition(
            composition_from_data(
                {
                    "name": "demo.title",
                    "steps": [{"id": "s", "tool": "textkit.upper", "args": {"text": "x"}}],
                }
            )
        )
        wanted = _toml('allow_unsigned = true\n[plugins.textkit.tools.echo]\nname = "demo.title"\n')
        with pytest.raises(NameClash) as err:
            host.reconfigure(HostConfig.model_validate(wanted))
        assert (
            "the tool name 'demo.title' would be both composition demo.title and tool echo "
            "of plugin textkit" in err.value.message
        )
        assert await host.call("demo.title", {}) == "X"
        assert await host.call("textkit.echo", {"text": "e"}) == "e"


async def test_bare_prompts_are_got_and_completed_by_their_own_names_and_renamed_live(
    mcp_home: Path, plugin_dirs: dict[str, Path]
) -> None:
    with (mcp_home / "config.toml").open("a") as f:
        f.write('[plugins.notes]\nexpose = "bare"\n')
    argv = [
        *mcphost_command(),
        "--home",
        str(mcp_home),
        "serve",
        "--no-environment",
        "--plugin-dir",
        str(plugin_dirs["notes"]),
    ]
    env = subprocess_coverage.environment()
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=env)
    async with Client(params) as client:
        await client.call_tool("save", {"title": "groceries", "body": "eggs"})
        assert [p.name for p in (await client.list_prompts()).prompts] == ["summarize"]
        got = await client.get_prompt("summarize", {"title": "groceries", "words": "5"})
        first = got.messages[0].content
        assert isinstance(first, types.TextContent)
        assert first.text == "Summarize this note in at most 5 words."
        done = await client.complete(
            types.PromptReference(type="ref/prompt", name="summarize"),
            {"name": "title", "value": "gro"},
        )
        assert done.completion.values == ["groceries"]

        # Back to prefixed while serving: clients hear the prompt list changed.
        async with client.listen(prompts_list_changed=True) as sub:
            proc = await anyio.to_thread.run_sync(
                lambda: subprocess.run(
                    [
                        *mcphost_command(),
                        "--home",
                        str(mcp_home),
                        "config",
                        "set",
                        "plugins.notes.expose",
                        "prefixed",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
            )
            assert proc.returncode == 0, proc.stderr
            with anyio.fail_after(20):
                event = await sub.__anext__()
            assert type(event).__name__ == "PromptsListChanged"
        assert [p.name for p in (await client.list_prompts()).prompts] == ["notes.summarize"]
        with pytest.raises(MCPError, match=r"unknown prompt 'summarize'"):
            await client.get_prompt("summarize", {"title": "groceries"})


#: A second plugin with a prompt named as notes' is.
MEMOS = '''
from mcphost.sdk import Plugin

plugin = Plugin("memos")


@plugin.prompt
def summarize(title: str) -> str:
    """Ask for a summary of a memo."""
    return f"Summarize memo {title}."
'''


async def test_a_change_that_makes_two_running_prompts_share_a_name_keeps_one_bare(
    mcp_home: Path, plugin_dirs: dict[str, Path], tmp_path: Path
) -> None:
    with (mcp_home / "config.toml").open("a") as f:
        f.write('[plugins.notes]\nexpose = "bare"\n')
    memos = write_plugin(tmp_path, "memos", MEMOS)
    async with (
        embedded_sources(mcp_home, [plugin_dirs["notes"]], [memos]) as served,
        served.client() as client,
    ):
        names = [p.name for p in (await client.list_prompts()).prompts]
        assert names == ["memos.summarize", "summarize"]
        # memos made bare while both run: their workers already run, so nothing is
        # refused; memos comes first in name order and keeps the bare name.
        config = served.host.config
        plugins = {**config.plugins, "memos": PluginSettings(expose="bare")}
        served.host.reconfigure(config.model_copy(update={"plugins": plugins}))
        names = [p.name for p in (await client.list_prompts()).prompts]
        assert names == ["notes.summarize", "summarize"]
        got = await client.get_prompt("summarize", {"title": "q3"})
        text = got.messages[0].content
        assert isinstance(text, types.TextContent) and text.text == "Summarize memo q3."
        await client.call_tool("save", {"title": "q3", "body": "up"})
        mine = await client.get_prompt("notes.summarize", {"title": "q3"})
        assert len(mine.messages) == 2
