"""``resources/list``, ``resources/templates/list`` and ``prompts/list`` in pages, as
``tools/list``: the official MCP client (2.x, in both eras) over stdio and streamable
HTTP follows ``nextCursor`` through lists longer than the server's page size and gets
every item exactly once; a cursor that is not one of that list's is ``-32602``.

The ``shelf`` plugin written here declares 7 resources, 5 templates and 7 prompts;
the server's page size is 3. The 1.x client (its own virtualenv) walks them too.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from http_helpers import Served
from mcp.client.client import Client
from mcp.shared.exceptions import MCPError
from support.cli import mcphost_command
from support.wheels import pip
from test_mcp1_client import mcp1_python  # noqa: F401  (a fixture)
from test_resources_prompts import write_plugin
from test_stdio import params

from mcphost.host import Host
from mcphost.host.home import Home
from mcphost.host.mcp import McpServer, ServerOptions
from mcphost.host.mcp.http import HttpFrontEnd, HttpOptions
from mcphost.host.mcp.pages import decode_cursor, page_by_key
from mcphost.security.tokens import create_token

PAGE = 3

SHELF = """
from mcphost.sdk import Plugin

plugin = Plugin("shelf")


def _item(i: int):
    def read() -> str:
        return f"item {i}"

    return read


def _family(i: int):
    def read(key: str) -> str:
        return f"family {i}: {key}"

    return read


def _ask(i: int):
    def ask(topic: str) -> str:
        return f"question {i} about {topic}"

    return ask


for i in range(7):
    plugin.resource(f"shelf://item/{i:02d}", name=f"item{i}")(_item(i))
for i in range(5):
    plugin.resource(f"shelf://family{i}/{{key}}", name=f"family{i}")(_family(i))
for i in range(7):
    plugin.prompt(name=f"ask{i}")(_ask(i))
"""

RESOURCES = [f"shelf://item/{i:02d}" for i in range(7)]
TEMPLATES = [f"shelf://family{i}/{{key}}" for i in range(5)]
PROMPTS = [f"shelf.ask{i}" for i in range(7)]

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "mcphost-shelf"
version = "1.0.0"

[project.entry-points."mcphost.plugins"]
shelf = "shelf:plugin"
"""


@pytest.fixture(scope="module")
def shelf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shelf plugin pip-installed (``--target``) into a plugin directory."""
    root = tmp_path_factory.mktemp("shelf")
    project = root / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "shelf.py").write_text(SHELF)
    target = root / "plugins"
    pip("install", "--no-deps", "--no-build-isolation", "--target", str(target), str(project))
    return target


Lister = Callable[[str | None], Awaitable[tuple[list[str], str | None]]]


def listers(client: Client) -> dict[str, Lister]:
    """Each paged list as (names on the page, next cursor) for a cursor."""

    async def resources(cursor: str | None) -> tuple[list[str], str | None]:
        got = await client.list_resources(cursor=cursor)
        return [str(r.uri) for r in got.resources], got.next_cursor

    async def templates(cursor: str | None) -> tuple[list[str], str | None]:
        got = await client.list_resource_templates(cursor=cursor)
        return [t.uri_template for t in got.resource_templates], got.next_cursor

    async def prompts(cursor: str | None) -> tuple[list[str], str | None]:
        got = await client.list_prompts(cursor=cursor)
        return [p.name for p in got.prompts], got.next_cursor

    return {"resources": resources, "templates": templates, "prompts": prompts}


async def walk(lister: Lister) -> tuple[list[str], list[str]]:
    """Every item of a list by following nextCursor, and the cursors met."""
    items, cursors = [], []
    names, cursor = await lister(None)
    items += names
    while cursor is not None:
        assert len(names) == PAGE  # only the last page is short
        cursors.append(cursor)
        names, cursor = await lister(cursor)
        assert 1 <= len(names) <= PAGE
        items += names
    return items, cursors


async def check_pages(client: Client) -> None:
    lists = listers(client)
    expected = {"resources": RESOURCES, "templates": TEMPLATES, "prompts": PROMPTS}
    cursors: dict[str, list[str]] = {}
    for name, lister in lists.items():
        items, cursors[name] = await walk(lister)
        assert items == sorted(expected[name])  # each exactly once, in order
        assert len(cursors[name]) == -(-len(expected[name]) // PAGE) - 1

    # A cursor of another list, and one never given out: -32602, saying what to do.
    for bad, method in [
        (cursors["resources"][0], lists["prompts"]),
        (cursors["prompts"][0], lists["templates"]),
        (cursors["templates"][0], lists["resources"]),
        ("not-a-cursor", lists["resources"]),
        ("", lists["prompts"]),
    ]:
        with pytest.raises(MCPError) as err:
            await method(bad)
        assert err.value.error.code == -32602
        assert "list again without a cursor" in err.value.error.message


def serve_argv(home: Path, plugins: Path) -> list[str]:
    return [
        *mcphost_command(),
        "--home",
        str(home),
        "serve",
        "--no-environment",
        "--page-size",
        str(PAGE),
        "--plugin-dir",
        str(plugins),
    ]


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_clients_of_either_era_page_through_resources_templates_and_prompts(
    mcp_home: Path, shelf_dir: Path, mode: str
) -> None:
    async with Client(params(serve_argv(mcp_home, shelf_dir)), mode=mode) as client:
        assert client.protocol_version == ("2026-07-28" if mode == "auto" else "2025-11-25")
        await check_pages(client)


@asynccontextmanager
async def served_shelf(home: Path, root: Path) -> AsyncIterator[Served]:
    """The shelf plugin behind an embedded HTTP server whose page size is :data:`PAGE`."""
    tokens = Home(home).tokens_file
    token, _ = create_token(tokens, f"test-{secrets.token_hex(4)}")
    shelf = write_plugin(root, "shelf", textwrap.dedent(SHELF))
    host = Host(home, sources=[shelf], environment=False, registry=False)
    server = McpServer(host, ServerOptions(page_size=PAGE))
    front = HttpFrontEnd(server, HttpOptions(host="127.0.0.1", port=0, tokens_file=tokens))
    await front.start()
    await server.ready()
    try:
        yield Served(host, front, token)
    finally:
        await front.close()
        await server.close()


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_http_clients_of_either_era_page_through_resources_templates_and_prompts(
    mcp_home: Path, tmp_path: Path, mode: str
) -> None:
    async with served_shelf(mcp_home, tmp_path) as served, served.client(mode=mode) as client:
        await check_pages(client)
        # The embedding API is not paged: everything at once.
        assert [r["uri"] for r in await served.host.list_resources()] == RESOURCES


def test_a_list_that_changes_between_pages_gives_no_item_twice_and_misses_none_added_later() -> (
    None
):
    def key(e: dict[str, str]) -> str:
        return e["uri"]

    first, cursor = page_by_key("resources", [{"uri": u} for u in "aceg"], key, None, 2)
    assert [e["uri"] for e in first] == ["a", "c"] and cursor is not None
    # Between the pages a plugin starts: b (before the cursor) and d (after) appear.
    grown = [{"uri": u} for u in "abcdeg"]
    after = decode_cursor("resources/list", "resources", cursor)
    second, cursor = page_by_key("resources", grown, key, after, 2)
    assert [e["uri"] for e in second] == ["d", "e"] and cursor is not None
    after = decode_cursor("resources/list", "resources", cursor)
    last, cursor = page_by_key("resources", grown, key, after, 2)
    assert [e["uri"] for e in last] == ["g"] and cursor is None


MCP1_CLIENT = """
import json, sys
import anyio
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client


async def walk(method, field, key):
    pages, cursor = [], None
    while True:
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await method(params=params)
        pages.append([key(x) for x in getattr(page, field)])
        cursor = page.nextCursor
        if cursor is None:
            return pages


async def main():
    argv = json.loads(sys.argv[1])
    params = StdioServerParameters(command=argv[0], args=argv[1:])
    async with stdio_client(params) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        print(json.dumps({
            "resources": await walk(s.list_resources, "resources", lambda x: str(x.uri)),
            "templates": await walk(
                s.list_resource_templates, "resourceTemplates", lambda x: x.uriTemplate
            ),
            "prompts": await walk(s.list_prompts, "prompts", lambda x: x.name),
        }))


anyio.run(main)
"""


def test_the_1x_client_pages_through_the_lists_over_stdio(
    mcp1_python: Path,  # noqa: F811
    mcp_home: Path,
    shelf_dir: Path,
) -> None:
    out = subprocess.run(
        [str(mcp1_python), "-c", MCP1_CLIENT, json.dumps(serve_argv(mcp_home, shelf_dir))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {
        "resources": [RESOURCES[:3], RESOURCES[3:6], RESOURCES[6:]],
        "templates": [TEMPLATES[:3], TEMPLATES[3:]],
        "prompts": [PROMPTS[:3], PROMPTS[3:6], PROMPTS[6:]],
    }
