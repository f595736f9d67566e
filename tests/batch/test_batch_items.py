"""Per-item results and errors of batch tools, with real workers: an item that fails on
its own fails only its caller, with its own code and message; every other caller of the
same batch call gets its result."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from batch_hosts import serving
from support.cli import run_mcphost
from support.sources import directory_source
from support.wheels import install_target

from mcphost.host import Host, PluginSource
from mcphost.sdk import Plugin, ToolError
from mcphost.sdk.errors import MCPHostError
from mcphost.sdk.testing import ToolTester

ITEMY = '''
import asyncio, threading
from mcphost.sdk import Plugin, ToolError

plugin = Plugin("itemy")
_seq = iter(range(1_000_000))
_gate = threading.Event()
_arrived: list[int] = []


def answer(items, n):
    """Item 1000 holds the batch until ``release``."""
    out = []
    for i in items:
        if i < 0:
            out.append(ToolError(f"{i} is negative", code="negative",
                                 data={"value": i, "order": n, "batch": len(items)}))
        elif i == 0:
            out.append(ZeroDivisionError("zero has no inverse"))
        else:
            out.append({"value": 2 * i, "order": n, "batch": len(items)})
    return out


@plugin.tool(batch=True)
def checked(items: list[int]) -> list:
    """Each item doubled; a negative item or zero fails on its own."""
    if 1000 in items:
        _arrived.append(1000)
        _gate.wait(20)
    return answer(items, next(_seq))


@plugin.tool(batch=True)
async def checked_async(items: list[int]) -> list:
    """The same as ``checked``, from the worker's event loop."""
    if 1000 in items:
        _arrived.append(1000)
        await asyncio.to_thread(_gate.wait, 20)
    return answer(items, next(_seq))


@plugin.tool
def release() -> None:
    _gate.set()


@plugin.tool
def arrived() -> list[int]:
    return list(_arrived)
'''


def itemy_source(tmp_path: Path) -> PluginSource:
    return directory_source(tmp_path / "itemy-code", "itemy", ITEMY)


MakeHost = Callable[..., Host]


@pytest.fixture
def item_host(tmp_path: Path) -> MakeHost:
    def make(features: dict[str, Any] | None = None, **batching: Any) -> Host:
        return serving(tmp_path, itemy_source(tmp_path), features, **batching)

    return make


async def holding(host: Host, tool: str) -> asyncio.Future[Any]:
    """A call to ``tool`` in the worker, holding its one batch slot until released."""
    first = asyncio.ensure_future(host.call(tool, {"items": [1000]}))
    for _ in range(2000):
        if await host.call("itemy.arrived") == [1000]:
            return first
        await asyncio.sleep(0.005)
    raise AssertionError("the held call never reached the worker")


async def queued() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def one_batch(host: Host, tool: str, values: list[int]) -> list[Any]:
    """Call ``tool`` once per value, all queued behind a held batch so that they leave
    together in one batch call; every caller's outcome."""
    first = await holding(host, tool)
    calls = [asyncio.ensure_future(host.call(tool, {"items": [v]})) for v in values]
    await queued()
    await host.call("itemy.release")
    await first
    return list(await asyncio.gather(*calls, return_exceptions=True))


@pytest.mark.parametrize("tool", ["itemy.checked", "itemy.checked_async"])
async def test_a_failed_item_fails_only_its_caller_in_a_shared_batch(
    item_host: MakeHost, tool: str
) -> None:
    values = [1, -2, 3, 0, 5]
    async with item_host(max_in_flight=1, max_queue_delay=10.0) as host:
        outcomes = await one_batch(host, tool, values)
    ok = [o for o in outcomes if not isinstance(o, BaseException)]
    assert [o[0]["value"] for o in ok] == [2, 6, 10]
    negative, zero = outcomes[1], outcomes[3]
    assert isinstance(negative, ToolError) and negative.code == "negative"
    assert negative.message == "-2 is negative"
    assert negative.data["value"] == -2 and negative.data["item"] == 0
    assert isinstance(zero, MCPHostError) and zero.code == "tool_exception"
    assert "ZeroDivisionError: zero has no inverse" in zero.message
    # They were all in one batch call: the failures did not fail it.
    assert {o[0]["order"] for o in ok} == {negative.data["order"]}
    assert negative.data["batch"] == len(values)


@pytest.mark.parametrize("batching", [True, False])
async def test_a_caller_with_several_items_gets_its_failed_items_error(
    item_host: MakeHost, batching: bool
) -> None:
    async with item_host(features={"batching": batching}) as host:
        with pytest.raises(ToolError) as failed:
            await host.call("itemy.checked", {"items": [4, -7, 9, -1]})
        good = await host.call("itemy.checked", {"items": [4, 9]})
    # The first failed item's error, and where it is in the caller's list.
    assert failed.value.code == "negative" and failed.value.message == "-7 is negative"
    assert failed.value.data["item"] == 1
    assert [g["value"] for g in good] == [8, 18]


async def test_an_explicit_batch_reports_each_items_status(item_host: MakeHost) -> None:
    async with item_host() as host:
        outcome = await host.batch("itemy.checked", [3, -3, 0, 4], reduce="count")
    assert [i.ok for i in outcome.items] == [True, False, False, True]
    assert [i.id for i in outcome.items] == [0, 1, 2, 3]
    assert outcome.items[0].result["value"] == 6
    error = outcome.items[1].error
    assert error is not None
    assert error["code"] == "negative" and error["message"] == "-3 is negative"
    assert outcome.items[2].error is not None
    assert outcome.items[2].error["code"] == "tool_exception"
    assert (outcome.succeeded, outcome.failed, outcome.aggregate) == (2, 2, 2)


def test_the_tool_tester_gives_failed_items_back_as_their_errors() -> None:
    plugin = Plugin("local")

    @plugin.tool(batch=True)
    def halve(items: list[int]) -> list[Any]:
        """Half of each even number."""
        return [i // 2 if i % 2 == 0 else ToolError(f"{i} is odd", code="odd") for i in items]

    with ToolTester(plugin) as tester:
        out = tester.call("halve", {"items": [4, 3, 8]})
    assert out[0] == 2 and out[2] == 4
    assert isinstance(out[1], ToolError) and out[1].code == "odd"
    assert out[1].message == "3 is odd" and out[1].data == {"item": 1}


def test_a_failed_item_that_is_not_an_exception_is_refused() -> None:
    plugin = Plugin("local")

    @plugin.tool(batch=True)
    def leave(items: list[int]) -> list[Any]:
        """Ends the process per item (which a batch tool may not do)."""
        return [SystemExit(i) for i in items]

    with ToolTester(plugin) as tester, pytest.raises(ToolError) as refused:
        tester.call("leave", {"items": [1]})
    assert refused.value.code == "bad_result" and "must be an Exception" in refused.value.message


INVERSE = '''


@plugin.tool(batch=True)
def inverse(numbers: list[float]) -> list[float | None]:
    """One over each number; zero fails on its own."""
    from mcphost.sdk import ToolError

    return [
        1 / n if n else ToolError(f"{n:g} has no inverse", code="zero", data={"value": n})
        for n in numbers
    ]
'''


@pytest.fixture(scope="module")
def inverse_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mathkit, plus the batch tool above, built as a wheel and pip-installed (--target)."""
    from mcphost.host.examples import build_wheels, copy_example, find_examples

    root = tmp_path_factory.mktemp("inverse")
    source = find_examples(Path(__file__).resolve().parents[2] / "example_plugins")
    project = copy_example(source / "mathkit", root / "src", version="1.0.1")
    init = project / "mcphost_mathkit" / "__init__.py"
    init.write_text(init.read_text() + INVERSE)
    wheel = build_wheels({"mathkit": project}, root / "wheels")["mathkit"]
    return install_target(wheel, root / "site")


def test_call_batch_prints_each_items_own_status(tmp_path: Path, inverse_dir: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('allow_unsigned = true\nisolation = "rlimits"\n')
    items = tmp_path / "items.jsonl"
    items.write_text("4\n0\n2\n")
    env = {"MCPHOST_HOME": str(home), "MCPHOST_PLUGIN_PATH": str(inverse_dir)}
    proc = run_mcphost("call", "mathkit.inverse", "--batch", items, extra_env=env, timeout=120)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[0] == {"id": 0, "ok": True, "result": 0.25}
    assert lines[1]["id"] == 1 and lines[1]["ok"] is False
    assert lines[1]["error"]["code"] == "zero"
    assert lines[1]["error"]["message"] == "0 has no inverse"
    assert lines[2] == {"id": 2, "ok": True, "result": 0.5}
    assert proc.returncode == 1 and "1 of 3 items failed" in proc.stderr
