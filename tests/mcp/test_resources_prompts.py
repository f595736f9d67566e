"""Plugins' resources, prompts and completions through ``mcphost serve``, driven by the
official MCP Python client (2.x here, 1.x from its own virtualenv) over stdio and
streamable HTTP, in both eras of the spec.

The notes example plugin offers ``notes://index``, the template ``notes://note/{title}``,
the prompt ``notes.summarize`` and completion of note titles; its ``save`` tool
announces that the note's resource changed. A plugin written here adds binary
resources and a prompt with an image.
"""

from __future__ import annotations

import base64
import json
import secrets
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from http_helpers import Served, http_client
from mcp.client.client import Client
from mcp.shared.exceptions import MCPError
from test_mcp1_client import mcp1_python  # noqa: F401  (a fixture)
from test_stdio import params

from mcphost.host import Host
from mcphost.host.home import Home
from mcphost.host.mcp import McpServer, ServerOptions
from mcphost.host.mcp.http import HttpFrontEnd, HttpOptions
from mcphost.host.sources import PluginSource, discover_directory
from mcphost.sdk.errors import HandshakeRefused
from mcphost.security.tokens import create_token

PNG = bytes.fromhex("89504e470d0a1a0a") + b"\x00pixels\xff"

#: A plugin with a binary resource, a binary template and a prompt holding an image.
ICONS = '''
from mcphost.sdk import Context, Image, Message, Plugin

plugin = Plugin("icons")
PNG = bytes.fromhex("89504e470d0a1a0a") + b"\\x00pixels\\xff"


@plugin.resource("icons://logo.png", mime_type="image/png")
def logo() -> bytes:
    """The logo."""
    return PNG


@plugin.resource("icons://sized/{size}", mime_type="application/octet-stream")
async def sized(size: int) -> bytes:
    """``size`` bytes of 0xAB."""
    return b"\\xab" * size


@plugin.prompt
def describe(size: int, ctx: Context) -> list[Message]:
    """Ask what the logo shows."""
    return [
        Message("user", f"What does this {size}px logo show?"),
        Message("user", Image(PNG, "image/png")),
        Message("assistant", "A logo."),
    ]


@plugin.completion("icons://sized/{size}", "size")
def sizes(value: str, arguments: dict[str, str]) -> list[str]:
    return [s for s in ("16", "32", "64", "128") if s.startswith(value)] + list(arguments)
'''


def write_plugin(root: Path, name: str, source: str, version: str = "1.0.0") -> PluginSource:
    code = root / f"code-{name}-{version}"
    code.mkdir(parents=True)
    (code / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return PluginSource(
        name=name,
        version=version,
        entry=f"{name}:plugin",
        paths=[str(code)],
        origin="directory",
        root=str(code),
    )


@asynccontextmanager
async def embedded_sources(
    home: Path, dirs: list[Path], sources: list[PluginSource]
) -> AsyncIterator[Served]:
    """A Host of plugin directories and sources, served over HTTP on a free port."""
    tokens = Home(home).tokens_file
    token, _ = create_token(tokens, f"test-{secrets.token_hex(4)}")
    host = Host(home, plugin_dirs=dirs, sources=sources, environment=False, registry=False)
    server = McpServer(host, ServerOptions(start_workers=True))
    front = HttpFrontEnd(server, HttpOptions(host="127.0.0.1", port=0, tokens_file=tokens))
    await front.start()
    await server.ready()
    try:
        yield Served(host, front, token)
    finally:
        await front.close()
        await server.close()


def notes_argv(mcp_home: Path, plugin_dirs: dict[str, Path], mcphost_cmd: list[str]) -> list[str]:
    return [
        *mcphost_cmd,
        "--home",
        str(mcp_home),
        "serve",
        "--no-environment",
        "--plugin-dir",
        str(plugin_dirs["notes"]),
    ]


async def exercise_notes(client: Client) -> None:
    """What every client of the notes plugin sees, in either era."""
    caps = client.server_capabilities
    assert caps.resources is not None and caps.resources.list_changed is True
    assert caps.prompts is not None and caps.prompts.list_changed is True
    assert caps.completions is not None

    await client.call_tool("notes.save", {"title": "groceries", "body": "eggs, milk"})
    await client.call_tool("notes.save", {"title": "greetings", "body": "hello"})

    listed = await client.list_resources()
    index = next(r for r in listed.resources if str(r.uri) == "notes://index")
    assert index.mime_type == "application/json"
    assert index.description == "The titles of all saved notes, as a JSON list."
    templates = await client.list_resource_templates()
    (note,) = [t for t in templates.resource_templates if t.name == "note"]
    assert note.uri_template == "notes://note/{title}"

    read = await client.read_resource("notes://index")
    (contents,) = read.contents
    assert isinstance(contents, types.TextResourceContents)
    assert json.loads(contents.text) == ["greetings", "groceries"]
    body = await client.read_resource("notes://note/groceries")
    assert isinstance(body.contents[0], types.TextResourceContents)
    assert body.contents[0].text == "eggs, milk"
    assert str(body.contents[0].uri) == "notes://note/groceries"

    prompts = await client.list_prompts()
    (summarize,) = [p for p in prompts.prompts if p.name == "notes.summarize"]
    args = {a.name: a.required for a in summarize.arguments or []}
    assert args == {"title": True, "words": False}
    got = await client.get_prompt("notes.summarize", {"title": "greetings", "words": "7"})
    first, second = got.messages
    assert isinstance(first.content, types.TextContent)
    assert first.content.text == "Summarize this note in at most 7 words."
    assert isinstance(second.content, types.EmbeddedResource)
    assert isinstance(second.content.resource, types.TextResourceContents)
    assert second.content.resource.text == "hello"

    done = await client.complete(
        types.PromptReference(type="ref/prompt", name="notes.summarize"),
        {"name": "title", "value": "gr"},
    )
    assert sorted(done.completion.values) == ["greetings", "groceries"]
    done = await client.complete(
        types.ResourceTemplateReference(type="ref/resource", uri="notes://note/{title}"),
        {"name": "title", "value": "gro"},
    )
    assert done.completion.values == ["groceries"]

    with pytest.raises(MCPError) as err:
        await client.read_resource("notes://elsewhere")
    assert err.value.error.code == -32602
    assert "notes://elsewhere" in err.value.error.message
    with pytest.raises(MCPError) as err:
        await client.get_prompt("notes.nosuch", {})
    assert err.value.error.code == -32602


async def test_stdio_2026_client_reads_resources_gets_prompts_completes_and_hears_updates(
    mcp_home: Path, plugin_dirs: dict[str, Path], mcphost_cmd: list[str]
) -> None:
    async with Client(params(notes_argv(mcp_home, plugin_dirs, mcphost_cmd))) as client:
        assert client.protocol_version == "2026-07-28"
        await exercise_notes(client)
        uri = "notes://note/groceries"
        async with client.listen(resource_subscriptions=[uri]) as sub:
            await client.call_tool("notes.save", {"title": "groceries", "body": "bread"})
            with anyio.fail_after(10):
                event = await sub.__anext__()
            assert type(event).__name__ == "ResourceUpdated" and event.uri == uri
        read = await client.read_resource(uri)
        assert isinstance(read.contents[0], types.TextResourceContents)
        assert read.contents[0].text == "bread"


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
async def test_stdio_handshake_client_subscribes_and_gets_resources_updated(
    mcp_home: Path, plugin_dirs: dict[str, Path], mcphost_cmd: list[str]
) -> None:
    updated: list[str] = []
    arrived = anyio.Event()

    async def on_message(msg: Any) -> None:
        if isinstance(msg, types.ResourceUpdatedNotification):
            updated.append(str(msg.params.uri))
            arrived.set()

    argv = notes_argv(mcp_home, plugin_dirs, mcphost_cmd)
    async with Client(params(argv), mode="legacy", message_handler=on_message) as client:
        assert client.protocol_version == "2025-11-25"
        assert client.server_capabilities.resources is not None
        assert client.server_capabilities.resources.subscribe is True
        await exercise_notes(client)
        await client.subscribe_resource("notes://note/todo")
        await client.call_tool("notes.save", {"title": "todo", "body": "write tests"})
        with anyio.fail_after(10):
            await arrived.wait()
        # Only the subscribed URI: the index changed too, but nobody asked for it.
        assert updated == ["notes://note/todo"]
        await client.unsubscribe_resource("notes://note/todo")
        await client.call_tool("notes.save", {"title": "todo", "body": "again"})
        await client.list_tools()  # a round trip after the save: its notice came first
        assert updated == ["notes://note/todo"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_http_binary_resources_templates_image_prompts_and_completion(
    mcp_home: Path, tmp_path: Path, mode: str
) -> None:
    icons = write_plugin(tmp_path, "icons", ICONS)
    async with (
        embedded_sources(mcp_home, [], [icons]) as served,
        served.client(mode=mode) as client,
    ):
        listed = await client.list_resources()
        assert [str(r.uri) for r in listed.resources] == ["icons://logo.png"]
        logo = await client.read_resource("icons://logo.png")
        (blob,) = logo.contents
        assert isinstance(blob, types.BlobResourceContents)
        assert blob.mime_type == "image/png"
        assert base64.b64decode(blob.blob) == PNG
        sized = await client.read_resource("icons://sized/5")
        assert isinstance(sized.contents[0], types.BlobResourceContents)
        assert base64.b64decode(sized.contents[0].blob) == b"\xab" * 5
        with pytest.raises(MCPError) as err:
            await client.read_resource("icons://sized/big")  # not an int
        assert err.value.error.code == -32602

        got = await client.get_prompt("icons.describe", {"size": "64"})
        text, image, answer = got.messages
        assert isinstance(text.content, types.TextContent) and "64px" in text.content.text
        assert isinstance(image.content, types.ImageContent)
        assert base64.b64decode(image.content.data) == PNG
        assert image.content.mime_type == "image/png"
        assert answer.role == "assistant"

        done = await client.complete(
            types.ResourceTemplateReference(type="ref/resource", uri="icons://sized/{size}"),
            {"name": "size", "value": "1"},
            context_arguments={"other": "x"},
        )
        assert done.completion.values == ["16", "128", "other"]
        assert done.completion.total == 3


async def test_http_2026_listener_sees_resources_and_prompts_list_changed_on_install(
    mcp_home: Path, plugin_dirs: dict[str, Path], embedded: Any
) -> None:
    async with (
        embedded(mcp_home, [plugin_dirs["textkit"]]) as served,
        served.client() as client,
    ):
        assert (await client.list_prompts()).prompts == []
        async with client.listen(prompts_list_changed=True, resources_list_changed=True) as sub:
            await served.host.activate(discover_directory(plugin_dirs["notes"])[0])
            seen: set[str] = set()
            with anyio.fail_after(10):
                while len(seen) < 2:
                    seen.add(type(await sub.__anext__()).__name__)
            assert seen == {"PromptsListChanged", "ResourcesListChanged"}
        names = [p.name for p in (await client.list_prompts()).prompts]
        assert names == ["notes.summarize"]


async def test_http_handshake_session_sees_list_changed_after_a_swap(
    mcp_home: Path, tmp_path: Path
) -> None:
    v1 = write_plugin(tmp_path, "icons", ICONS, "1.0.0")
    v2 = write_plugin(
        tmp_path,
        "icons",
        ICONS + '\n\n@plugin.prompt\ndef second() -> str:\n    """Another."""\n    return "hi"\n',
        "2.0.0",
    )
    changed: set[str] = set()
    both = anyio.Event()

    async def on_message(msg: Any) -> None:
        if isinstance(
            msg, types.PromptListChangedNotification | types.ResourceListChangedNotification
        ):
            changed.add(type(msg).__name__)
            if len(changed) == 2:
                both.set()

    async with (
        embedded_sources(mcp_home, [], [v1]) as served,
        served.client(mode="legacy", message_handler=on_message) as client,
    ):
        assert [p.name for p in (await client.list_prompts()).prompts] == ["icons.describe"]
        with anyio.fail_after(10):
            while not any(served.front.streams):  # the client's GET stream is open
                await anyio.sleep(0.01)
        await served.host.activate(v2)
        with anyio.fail_after(10):
            await both.wait()
        names = [p.name for p in (await client.list_prompts()).prompts]
        assert names == ["icons.describe", "icons.second"]
        second = await client.get_prompt("icons.second", {})
        assert isinstance(second.messages[0].content, types.TextContent)
        assert second.messages[0].content.text == "hi"


CLASH = """
from mcphost.sdk import Plugin

plugin = Plugin("{name}")


@plugin.resource("{uri}")
def thing({params}) -> str:
    return "{name}"
"""


async def test_a_plugin_whose_resource_uris_clash_with_another_is_refused_naming_both(
    mcp_home: Path, tmp_path: Path
) -> None:
    first = write_plugin(
        tmp_path, "first", CLASH.format(name="first", uri="shared://{id}", params="id: str")
    )
    second = write_plugin(
        tmp_path, "second", CLASH.format(name="second", uri="shared://one", params="")
    )
    async with embedded_sources(mcp_home, [], [first]) as served, served.client() as client:
        with pytest.raises(HandshakeRefused) as err:
            await served.host.activate(second)
        assert "second" in err.value.message and "'first'" in err.value.message
        assert "shared://one" in err.value.message
        # Nothing changed: the first plugin still answers for its URIs.
        read = await client.read_resource("shared://one")
        assert isinstance(read.contents[0], types.TextResourceContents)
        assert read.contents[0].text == "first"
        assert "second" not in {p.name for p in served.host.plugins()}


MCP1_CLIENT = r"""
import json, sys
import anyio
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client


async def main():
    argv = json.loads(sys.argv[1])
    updated = []

    async def on_message(msg):
        if isinstance(msg, types.ServerNotification) and isinstance(
            msg.root, types.ResourceUpdatedNotification
        ):
            updated.append(str(msg.root.params.uri))

    params = StdioServerParameters(command=argv[0], args=argv[1:])
    async with stdio_client(params) as (r, w), ClientSession(
        r, w, message_handler=on_message
    ) as s:
        init = await s.initialize()
        await s.call_tool("notes.save", {"title": "a", "body": "one"})
        await s.subscribe_resource("notes://note/a")
        await s.call_tool("notes.save", {"title": "a", "body": "two"})
        read = await s.read_resource("notes://note/a")
        prompt = await s.get_prompt("notes.summarize", {"title": "a"})
        done = await s.complete(
            types.PromptReference(type="ref/prompt", name="notes.summarize"),
            {"name": "title", "value": ""},
        )
        templates = await s.list_resource_templates()
        with anyio.fail_after(10):
            while not updated:
                await anyio.sleep(0.01)
        print(json.dumps({
            "caps": init.capabilities.model_dump(exclude_none=True),
            "read": read.contents[0].text,
            "prompt": prompt.messages[1].content.resource.text,
            "done": done.completion.values,
            "templates": [t.uriTemplate for t in templates.resourceTemplates],
            "updated": updated,
        }))


anyio.run(main)
"""


def test_mcp_1x_client_reads_subscribes_gets_prompts_and_completes_over_stdio(
    mcp1_python: Path,  # noqa: F811
    mcp_home: Path,
    plugin_dirs: dict[str, Path],
    mcphost_cmd: list[str],
) -> None:
    import subprocess

    argv = notes_argv(mcp_home, plugin_dirs, mcphost_cmd)
    out = subprocess.run(
        [str(mcp1_python), "-c", MCP1_CLIENT, json.dumps(argv)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["caps"]["resources"] == {"subscribe": True, "listChanged": True}
    assert result["caps"]["prompts"] == {"listChanged": True}
    assert result["read"] == "two"
    assert result["prompt"] == "two"
    assert result["done"] == ["a"]
    assert result["templates"] == ["notes://note/{title}"]
    assert result["updated"] == ["notes://note/a"]


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_http_clients_of_either_era_read_get_complete_and_hear_resource_updates(
    mcp_home: Path, plugin_dirs: dict[str, Path], mode: str
) -> None:
    updated: list[str] = []
    arrived = anyio.Event()

    async def on_message(msg: Any) -> None:
        if isinstance(msg, types.ResourceUpdatedNotification):
            updated.append(str(msg.params.uri))
            arrived.set()

    uri = "notes://note/plan"
    async with (
        embedded_sources(mcp_home, [plugin_dirs["notes"]], []) as served,
        served.client(mode=mode, message_handler=on_message) as client,
    ):
        await exercise_notes(client)
        if mode == "legacy":
            with anyio.fail_after(10):
                while not any(served.front.streams):  # the client's GET stream is open
                    await anyio.sleep(0.01)
            await client.subscribe_resource(uri)
            await client.call_tool("notes.save", {"title": "plan", "body": "v1"})
            with anyio.fail_after(10):
                await arrived.wait()
            assert updated == [uri]
        else:
            async with client.listen(resource_subscriptions=[uri]) as sub:
                await client.call_tool("notes.save", {"title": "other", "body": "x"})
                await client.call_tool("notes.save", {"title": "plan", "body": "v1"})
                with anyio.fail_after(10):
                    event = await sub.__anext__()
                assert type(event).__name__ == "ResourceUpdated" and event.uri == uri


async def test_an_http_token_limited_to_some_tools_reaches_no_resources_or_prompts(
    mcp_home: Path, plugin_dirs: dict[str, Path]
) -> None:
    limited, _ = create_token(Home(mcp_home).tokens_file, "limited", tools=["notes.*"])
    async with embedded_sources(mcp_home, [plugin_dirs["notes"]], []) as served:
        async with http_client(served.front.url, limited) as client:
            assert (await client.call_tool("notes.list", {})).is_error is False
            for attempt in (client.list_resources(), client.list_prompts()):
                with pytest.raises(MCPError) as err:
                    await attempt
                assert err.value.error.code == -32602
                assert "needs a token without a tool list" in err.value.error.message
        async with served.client() as client:  # the unlimited token
            assert (await client.list_prompts()).prompts


async def test_bad_prompt_arguments_and_template_variables_say_where_to_look(
    mcp_home: Path, tmp_path: Path
) -> None:
    """Not a tool's input schema (``mcphost tools --json`` lists no prompt or resource):
    prompts/list for a prompt's arguments, the template for a resource's variables."""
    icons = write_plugin(tmp_path, "icons", ICONS)
    async with embedded_sources(mcp_home, [], [icons]) as served, served.client() as client:
        for args in ({}, {"size": "64", "colour": "red"}, {"size": "big"}):
            with pytest.raises(MCPError) as err:
                await client.get_prompt("icons.describe", args)
            assert err.value.error.code == -32602
            message = err.value.error.message
            assert "prompts/list shows the prompt's arguments" in message
            assert "mcphost tools" not in message
        with pytest.raises(MCPError) as err:
            await client.read_resource("icons://sized/big")
        assert err.value.error.code == -32602
        message = err.value.error.message
        assert "`$.size`" in message and "icons://sized/{size}" in message
        assert "resources/templates/list" in message and "mcphost tools" not in message
