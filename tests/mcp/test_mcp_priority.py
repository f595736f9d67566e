"""A ``tools/call`` gives its call a priority in ``_meta["mcphost/priority"]``: with the
official client over stdio and streamable HTTP, in both eras, a high-priority call to a
batch tool overtakes the low-priority ones queued before it, and a priority that is not
a whole number from 0 to 100 is refused as invalid params."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError
from support.wheels import install_target

#: Tools added to a copy of textkit: ``held`` is a batch tool (one item a batch) whose
#: batches wait in the worker until ``release``; ``seen`` is the order items ran in.
HELD_TOOLS = '''

import threading as _threading

_gate = _threading.Event()
_seen: list[int] = []
_arrived: list[int] = []


@plugin.tool(batch=True, max_batch_size=1)
def held(items: list[int]) -> list[int]:
    """Waits until ``release`` is called (at most 20 s)."""
    _arrived.extend(items)
    _gate.wait(20)
    _seen.extend(items)
    return items


@plugin.tool
def release() -> None:
    _gate.set()


@plugin.tool
def seen() -> list[int]:
    return list(_seen)


@plugin.tool
def arrived() -> list[int]:
    return list(_arrived)
'''

KEY = "mcphost/priority"


@pytest.fixture(scope="session")
def held_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """textkit plus the tools above, built as a wheel and pip-installed (--target)."""
    from mcphost.host.examples import build_wheels, copy_example, find_examples

    root = tmp_path_factory.mktemp("held")
    source = find_examples(Path(__file__).resolve().parents[2] / "example_plugins")
    project = copy_example(source / "textkit", root / "src", version="1.0.2")
    init = project / "mcphost_textkit" / "__init__.py"
    init.write_text(init.read_text() + HELD_TOOLS)
    wheel = build_wheels({"textkit": project}, root / "wheels")["textkit"]
    return install_target(wheel, root / "site")


@pytest.fixture
def held_home(mcp_home: Path) -> Path:
    """One batch at a time, and no batch leaves early to fill up: the order calls run
    in is the order the batcher chose."""
    (mcp_home / "config.toml").write_text(
        "allow_unsigned = true\n\n[batching]\nmax_in_flight = 1\nmax_queue_delay = 10.0\n"
    )
    return mcp_home


def result(res: Any) -> Any:
    assert not res.is_error, res
    return res.structured_content["result"]


async def overtaking(client: Client) -> list[int]:
    """Hold one call in the worker, queue three at priority 2, then one at 0; release."""
    first = asyncio.ensure_future(client.call_tool("textkit.held", {"items": [0]}))
    for _ in range(2000):
        if result(await client.call_tool("textkit.arrived", {})) == [0]:
            break
        await asyncio.sleep(0.005)
    low = [
        asyncio.ensure_future(client.call_tool("textkit.held", {"items": [i]}, meta={KEY: 2}))
        for i in (1, 2, 3)
    ]
    for _ in range(5):
        await asyncio.sleep(0)
    high = asyncio.ensure_future(client.call_tool("textkit.held", {"items": [99]}, meta={KEY: 0}))
    for _ in range(5):
        await asyncio.sleep(0)
    # The server reads requests in order and queues a call without waiting on the way:
    # every call above is queued before this one reaches the worker.
    assert not (await client.call_tool("textkit.release", {})).is_error
    answers = [result(r) for r in await asyncio.gather(first, *low, high)]
    assert answers == [[0], [1], [2], [3], [99]]
    seen: list[int] = result(await client.call_tool("textkit.seen", {}))
    return seen


async def refusals(client: Client) -> None:
    for bad in (101, -1, 1.5, "0", True):
        with pytest.raises(MCPError) as caught:
            await client.call_tool("textkit.held", {"items": [5]}, meta={KEY: bad})
        error = caught.value.error
        assert error.code == -32602, error
        assert f"_meta['{KEY}'] must be a whole number from 0" in error.message
        assert "to 100" in error.message and f"got {bad!r}" in error.message
    # A refused call never ran.
    assert 5 not in result(await client.call_tool("textkit.arrived", {}))


def stdio_argv(mcphost_cmd: list[str], home: Path, plugin: Path) -> StdioServerParameters:
    argv = [*mcphost_cmd, "--home", str(home), "serve", "--no-environment"]
    argv += ["--plugin-dir", str(plugin)]
    return StdioServerParameters(command=argv[0], args=argv[1:])


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_high_priority_request_overtakes_queued_low_ones_over_stdio(
    mcphost_cmd: list[str], held_home: Path, held_dir: Path, mode: str
) -> None:
    async with Client(stdio_argv(mcphost_cmd, held_home, held_dir), mode=mode) as client:
        assert await overtaking(client) == [0, 99, 1, 2, 3]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_high_priority_request_overtakes_queued_low_ones_over_http(
    held_home: Path, held_dir: Path, embedded: Any, mode: str
) -> None:
    async with embedded(held_home, [held_dir]) as served, served.client(mode=mode) as client:
        assert await overtaking(client) == [0, 99, 1, 2, 3]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_bad_priority_is_invalid_params_over_stdio(
    mcphost_cmd: list[str], held_home: Path, held_dir: Path, mode: str
) -> None:
    async with Client(stdio_argv(mcphost_cmd, held_home, held_dir), mode=mode) as client:
        await refusals(client)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_bad_priority_is_invalid_params_over_http(
    held_home: Path, held_dir: Path, embedded: Any, mode: str
) -> None:
    async with embedded(held_home, [held_dir]) as served, served.client(mode=mode) as client:
        await refusals(client)
