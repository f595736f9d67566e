"""A batch tool's own batching settings (its decorator) and the operator's per-tool
overrides (``[batching.tools."P.T"]``), with real workers: which wins, that they apply
live, and that bad values are refused with what is wrong."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from batch_hosts import serving
from support.sources import directory_source

from mcphost.host import Host, PluginSource
from mcphost.host.batch.settings import resolve
from mcphost.host.cli.config_cmd import effective_config
from mcphost.host.config import BatchingConfig, load_config
from mcphost.host.home import Home
from mcphost.sdk import Plugin
from mcphost.sdk.errors import ConfigError
from mcphost.sdk.schema import BatchSettings, ToolSpec
from mcphost.sdk.tool_rules import tool_problem

SETTY = '''
import threading
from mcphost.sdk import Plugin

plugin = Plugin("setty")
_seq = iter(range(1_000_000))
_gate = threading.Event()
_arrived: list[int] = []
_seen: list[int] = []


def hold(items):
    """A batch holding item 1000 waits until ``release``."""
    if 1000 in items:
        _arrived.append(1000)
        _gate.wait(20)


@plugin.tool(batch=True, max_batch_size=3, max_queue_delay_ms=10_000)
def capped(items: list[int]) -> list[dict]:
    """Each item with the size and order of its batch; at most 3 items a batch."""
    hold(items)
    n = next(_seq)
    return [{"value": i, "batch": len(items), "order": n} for i in items]


@plugin.tool(batch=True, priority=0, max_batch_size=1)
def urgent(items: list[int]) -> list[int]:
    """Calls that name no priority are at level 0."""
    hold(items)
    _seen.extend(items)
    return items


@plugin.tool(batch=True, batch_key="items[0].lang", max_queue_delay_ms=10_000)
def by_lang(items: list[dict]) -> list[dict]:
    """Each item's language with every language of its batch."""
    hold([1000] if any(i.get("hold") for i in items) else [])
    n = next(_seq)
    langs = sorted({i["lang"] for i in items})
    return [{"lang": i["lang"], "langs": langs, "order": n} for i in items]


@plugin.tool
def release() -> None:
    _gate.set()


@plugin.tool
def arrived() -> list[int]:
    return list(_arrived)


@plugin.tool
def seen() -> list[int]:
    return list(_seen)
'''


def setty_source(tmp_path: Path) -> PluginSource:
    return directory_source(tmp_path / "setty-code", "setty", SETTY)


MakeHost = Callable[..., Host]


@pytest.fixture
def setty_host(tmp_path: Path) -> MakeHost:
    def make(**batching: Any) -> Host:
        return serving(tmp_path, setty_source(tmp_path), max_in_flight=1, **batching)

    return make


async def holding(host: Host, tool: str, args: dict[str, Any]) -> asyncio.Future[Any]:
    """A call to ``tool`` held in the worker (its tool's one batch slot taken)."""
    first = asyncio.ensure_future(host.call(tool, args))
    for _ in range(2000):
        if await host.call("setty.arrived") == [1000]:
            return first
        await asyncio.sleep(0.005)
    raise AssertionError("the held call never reached the worker")


async def queued() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def behind_a_held_batch(host: Host, tool: str, calls: list[dict[str, Any]]) -> list[Any]:
    """Queue ``calls`` while a batch of ``tool`` is held, then let everything go."""
    first = await holding(host, tool, {"items": [1000]})
    futures = [asyncio.ensure_future(host.call(tool, a)) for a in calls]
    await queued()
    await host.call("setty.release")
    await first
    return list(await asyncio.gather(*futures))


# -- the decorator -----------------------------------------------------------------


def test_the_decorator_puts_the_settings_in_the_tools_descriptor() -> None:
    plugin = Plugin("p")

    @plugin.tool(
        batch=True,
        max_batch_size=8,
        preferred_sizes=[4, 8],
        max_queue_delay_ms=2.5,
        target_latency_ms=40,
        batch_key="model",
        priority=0,
    )
    def embed(texts: list[str], model: str = "small") -> list[list[float]]:
        """Vectors."""
        return [[0.0] for _ in texts]

    @plugin.tool(batch=True)
    def plain(items: list[int]) -> list[int]:
        return items

    spec = plugin.tools["embed"].spec
    assert spec.batching == BatchSettings(
        max_batch_size=8,
        preferred_sizes=[4, 8],
        max_queue_delay_ms=2.5,
        target_latency_ms=40,
        batch_key="model",
        priority=0,
    )
    assert plugin.tools["plain"].spec.batching is None


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"max_batch_size": 0}, "max_batch_size is 0; it must be a whole number from 1"),
        ({"max_batch_size": 4, "preferred_sizes": [2, 8]}, "preferred_sizes are [2, 8]"),
        ({"max_queue_delay_ms": -1}, "max_queue_delay_ms is -1; it must be a number from 0"),
        ({"target_latency_ms": 0}, "target_latency_ms is 0; it must be a number above 0"),
        ({"priority": 101}, "priority is 101; it must be a whole number from 0"),
        ({"batch_key": "usr"}, "batch_key 'usr' names no parameter (it has: items, user)"),
        ({"batch_key": "items[0"}, "batch_key 'items[0' is not a JMESPath expression"),
        ({"batch": False, "priority": 0}, "has batch settings but is not a batch tool"),
    ],
)
def test_bad_batch_settings_are_refused_when_the_tool_is_declared(
    options: dict[str, Any], says: str
) -> None:
    plugin = Plugin("p")
    options = {"batch": True, **options}
    with pytest.raises(ValueError) as refused:

        @plugin.tool(**options)
        def tool(items: list[int], user: str = "") -> list[int]:
            return items

    assert says in str(refused.value)
    assert str(refused.value).startswith("plugin p: tool tool:")


def test_the_host_refuses_bad_settings_in_a_workers_handshake() -> None:
    # What a worker may send though its SDK would have refused it.
    spec = ToolSpec(
        name="t",
        input_schema={"type": "object", "properties": {"items": {"type": "array"}}},
        batch=True,
        batching=BatchSettings(max_batch_size=10**9),
    )
    assert "max_batch_size" in (tool_problem("p", spec) or "")
    loose = ToolSpec(name="t", batching=BatchSettings(priority=True))  # type: ignore[arg-type]
    assert "not a batch tool" in (tool_problem("p", loose) or "")


# -- which value wins ----------------------------------------------------------------


def test_the_operators_table_wins_over_the_tools_own_which_wins_over_the_hosts() -> None:
    own = BatchSettings(max_batch_size=8, preferred_sizes=[4, 8, 16], max_queue_delay_ms=20)
    cfg = BatchingConfig(max_batch_size=32, max_queue_delay=0.005, default_priority=2)
    r = resolve(cfg, "p.t", own)
    assert r.former.max_batch_size == 8 and r.former.preferred_sizes == (4, 8)
    assert r.former.max_queue_delay == pytest.approx(0.02)
    assert r.default_priority == 2 and r.batch_key == "" and r.target_latency is None
    cfg = BatchingConfig.model_validate(
        {"tools": {"p.t": {"max_batch_size": 5, "priority": 0, "batch_key": "user"}}}
    )
    r = resolve(cfg, "p.t", own)
    assert r.former.max_batch_size == 5 and r.former.preferred_sizes == (4,)
    assert r.default_priority == 0 and r.batch_key == "user"
    assert resolve(cfg, "p.other", None).former.max_batch_size == 32


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ("[batching.tools.mathkit]\nmax_batch_size = 4\n", "'mathkit' is not a tool name"),
        ('[batching.tools."m.t"]\nmax_batch_size = 0\n', "max_batch_size"),
        ('[batching.tools."m.t"]\nbatch_key = "a["\n', "is not a JMESPath expression"),
        ('[batching.tools."m.t"]\npriority = 200\n', "priority"),
        ('[batching.tools."m.t"]\npreferred_sizes = [0]\n', "preferred_sizes"),
        ('[batching.tools."m.t"]\nsize = 3\n', "unknown key"),
    ],
)
def test_bad_per_tool_settings_are_refused_with_what_is_wrong(
    tmp_path: Path, table: str, says: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(table, encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert says in refused.value.message and "batching.tools" in refused.value.message


# -- with real workers ----------------------------------------------------------------


async def test_a_tools_own_maximum_caps_its_batches(setty_host: MakeHost) -> None:
    async with setty_host(max_batch_size=32) as host:
        out = await behind_a_held_batch(host, "setty.capped", [{"items": [i]} for i in range(9)])
    assert [r[0]["value"] for r in out] == list(range(9))
    assert max(r[0]["batch"] for r in out) == 3


async def test_the_operators_per_tool_maximum_wins_and_applies_live(
    setty_host: MakeHost, tmp_path: Path
) -> None:
    async with setty_host() as host:
        path = tmp_path / "config.toml"
        path.write_text(
            textwrap.dedent(
                """
                allow_unsigned = true
                isolation = "rlimits"
                [batching]
                max_in_flight = 1
                [batching.tools."setty.capped"]
                max_batch_size = 6
                """
            ),
            encoding="utf-8",
        )
        host.reconfigure(load_config(path))
        wider = await behind_a_held_batch(host, "setty.capped", [{"items": [i]} for i in range(12)])
        # The table removed again: the tool's own maximum is back.
        path.write_text(
            'allow_unsigned = true\nisolation = "rlimits"\n[batching]\nmax_in_flight = 1\n',
            encoding="utf-8",
        )
        host.reconfigure(load_config(path))
        back = await host.batch("setty.capped", list(range(9)))
        snapshot = host.batching()["setty.capped"]
    assert max(r[0]["batch"] for r in wider) == 6
    assert all(i.ok for i in back.items)
    assert max(i.result["batch"] for i in back.items) <= 3
    assert snapshot["size_allowed"] == snapshot["max_batch_size"] == 3


async def test_a_call_that_names_no_priority_gets_the_tools_own(setty_host: MakeHost) -> None:
    async with setty_host() as host:
        first = await holding(host, "setty.urgent", {"items": [1000]})
        low = [
            asyncio.ensure_future(host.call("setty.urgent", {"items": [i]}, priority=1))
            for i in (1, 2, 3)
        ]
        await queued()
        unnamed = asyncio.ensure_future(host.call("setty.urgent", {"items": [99]}))
        await queued()
        await host.call("setty.release")
        await asyncio.gather(first, *low, unnamed)
        seen = await host.call("setty.seen")
        assert host.batching()["setty.urgent"]["default_priority"] == 0
    # The tool's priority is 0, above the level 1 the others asked for.
    assert seen == [1000, 99, 1, 2, 3]


async def test_only_calls_with_the_same_key_share_a_batch(setty_host: MakeHost) -> None:
    calls = [{"items": [{"lang": "en" if i % 3 else "fr", "n": i}]} for i in range(12)]
    async with setty_host() as host:
        first = await holding(host, "setty.by_lang", {"items": [{"lang": "de", "hold": True}]})
        futures = [asyncio.ensure_future(host.call("setty.by_lang", a)) for a in calls]
        await queued()
        await host.call("setty.release")
        await first
        out = await asyncio.gather(*futures)
    assert [r[0]["lang"] for r in out] == [c["items"][0]["lang"] for c in calls]
    assert all(r[0]["langs"] == [r[0]["lang"]] for r in out)  # never mixed
    assert len({r[0]["order"] for r in out}) == 2  # and each key went as one batch


def test_config_show_names_a_tools_table_as_toml_does(tmp_path: Path) -> None:
    root = tmp_path / "home"
    root.mkdir()
    (root / "config.toml").write_text('[batching.tools."m.t"]\nmax_batch_size = 8\n')
    rows = {r["key"]: r for r in effective_config(Home(root))}
    assert rows['batching.tools."m.t".max_batch_size']["value"] == 8
    assert rows['batching.tools."m.t".max_batch_size']["source"] == str(root / "config.toml")
    assert rows['batching.tools."m.t".priority']["source"] == "default"
