"""Streams, batches and compositions of a Ray-hosted plugin (placement = "ray"), on a
real local Ray cluster, answer as they do locally: a slow consumer pauses the producer
on the node with the host's buffer bounded and every item once and in order; concurrent
calls of a batch tool share batch calls with per-item errors, and an explicit batch
reports each item; a composition runs steps on the remote plugin and on a local one."""

from __future__ import annotations

import asyncio
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from mcphost.host import Home, Host, HostConfig, PluginSource
from mcphost.host.compose import composition_from_data
from mcphost.sdk.errors import CompositionFailed, MCPHostError, ToolError

WINDOW_BYTES = 4096
HIGH = 16 * 1024
LOW = 4 * 1024
SIZE = 500

LOCALKIT = '''
import os
from mcphost.sdk import Plugin

plugin = Plugin("localkit")


@plugin.tool
def shout(text: str) -> str:
    """The text, upper-cased, with an exclamation mark."""
    return text.upper() + "!"


@plugin.tool
def where() -> dict:
    """The pid and parent pid of the worker that ran the call."""
    return {"pid": os.getpid(), "ppid": os.getppid()}
'''


def config(**host: Any) -> HostConfig:
    return HostConfig(
        isolation="rlimits",
        plugins={"remotekit": {"placement": "ray", "num_cpus": 0.5}},  # type: ignore[dict-item]
        cluster={"backend": "ray", "address": "auto"},  # type: ignore[arg-type]
        backoff_initial=0.0,
        **host,
    )


def ray_host(home: Home, cfg: HostConfig, sources: list[PluginSource] | None = None) -> Host:
    return Host(home, config=cfg, sources=sources or [], environment=False, status=False)


def remote_parent(out: dict[str, Any]) -> bool:
    """Whether the worker that answered ``out`` is not a child of this process (the Ray
    actor on the node started it)."""
    return out["ppid"] != os.getpid()


def localkit(tmp_path: Path) -> PluginSource:
    code = tmp_path / "localkit-code"
    code.mkdir()
    (code / "localkit.py").write_text(textwrap.dedent(LOCALKIT), encoding="utf-8")
    return PluginSource(
        name="localkit",
        version="1.0.0",
        entry="localkit:plugin",
        paths=[str(code)],
        origin="directory",
        root=str(code),
    )


# -- a stream with a slow consumer ---------------------------------------------------


async def test_a_slow_consumer_pauses_the_remote_producer_and_loses_nothing(
    ray_cluster: Any, cluster_home: Home
) -> None:
    streaming = {
        "window_bytes": WINDOW_BYTES,
        "high_watermark": HIGH,
        "low_watermark": LOW,
        "window_items": 64,
    }
    async with ray_host(cluster_home, config(streaming=streaming)) as host:
        assert remote_parent(await host.call("remotekit.where", {}))
        got: list[int] = []
        peaks: list[int] = []
        states: set[str] = set()
        ahead: list[int] = []
        async for item in host.stream("remotekit.numbers", {"n": 600, "size": SIZE}):
            got.append(item["i"])
            if len(got) % 40 == 0:
                # The consumer dawdles: the producer on the node fills the buffer, then
                # waits for credit.
                await asyncio.sleep(0.05)
                (active,) = host.flow.snapshot()
                states.add(active["state"])
                peaks.append(active["buffered"])
                ahead.append(await host.call("remotekit.produced", {}) - len(got))
        assert got == list(range(600)), "items lost, duplicated or out of order"
        assert "paused" in states, "the stream never paused above its high watermark"
        # The host's buffer is bounded: the high watermark plus one byte window in flight.
        assert max(peaks) <= HIGH + WINDOW_BYTES + 2 * SIZE
        # The producer on the node never ran more than the buffer and a window ahead of
        # the consumer (without credit crossing the node it would have produced all 600).
        bound = (HIGH + WINDOW_BYTES) // SIZE + 2
        assert max(ahead) <= bound, ahead
        stats = host.flow.metrics.tools["remotekit.numbers"]  # type: ignore[union-attr]
        assert stats.pauses >= 1
        assert stats.completed == 1 and stats.items == 600
        assert host.flow.snapshot() == []


# -- a batch -------------------------------------------------------------------------


async def held_batch(host: Host, values: list[int]) -> list[Any]:
    """Call ``remotekit.checked`` once per value, all queued behind a held batch so that
    they leave together in one batch call; every caller's outcome."""
    first = asyncio.ensure_future(host.call("remotekit.checked", {"items": [1000]}))
    for _ in range(2000):
        if await host.call("remotekit.arrived", {}) == [1000]:
            break
        await asyncio.sleep(0.005)
    else:
        raise AssertionError("the held call never reached the remote worker")
    calls = [asyncio.ensure_future(host.call("remotekit.checked", {"items": [v]})) for v in values]
    for _ in range(5):
        await asyncio.sleep(0)
    await host.call("remotekit.release", {})
    assert (await first)[0]["value"] == 2000
    return list(await asyncio.gather(*calls, return_exceptions=True))


async def test_concurrent_calls_of_a_remote_batch_tool_share_a_batch_with_per_item_errors(
    ray_cluster: Any, cluster_home: Home
) -> None:
    cfg = config(batching={"max_in_flight": 1, "max_queue_delay": 10.0})
    async with ray_host(cluster_home, cfg) as host:
        assert remote_parent(await host.call("remotekit.where", {}))
        values = [1, -2, 3, 4]
        outcomes = await held_batch(host, values)
        stats = host.batching()["remotekit.checked"]
    ok = [o for o in outcomes if not isinstance(o, BaseException)]
    assert [o[0]["value"] for o in ok] == [2, 6, 8]
    negative = outcomes[1]
    assert isinstance(negative, ToolError) and negative.code == "negative"
    assert negative.message == "-2 is negative"
    assert negative.data["item"] == 0
    # All four went in one batch call on the node; the failed item did not fail it.
    assert {o[0]["order"] for o in ok} == {negative.data["order"]}
    assert {o[0]["batch"] for o in ok} == {len(values)} == {negative.data["batch"]}
    assert stats["largest_batch"] == len(values)


async def test_an_explicit_batch_of_a_remote_tool_reports_each_item(
    ray_cluster: Any, cluster_home: Home
) -> None:
    async with ray_host(cluster_home, config()) as host:
        outcome = await host.batch("remotekit.checked", [3, -3, 5], reduce="count")
        # A tool that is not a batch tool: one remote call per item.
        calls = await host.batch("remotekit.refuse", [{"why": "a"}], args={})
    assert [i.ok for i in outcome.items] == [True, False, True]
    assert [i.result["value"] for i in outcome.items if i.ok] == [6, 10]
    error = outcome.items[1].error
    assert error is not None and error["code"] == "negative"
    assert error["message"] == "-3 is negative"
    assert (outcome.succeeded, outcome.failed, outcome.aggregate) == (2, 1, 2)
    (refused,) = calls.items
    assert not refused.ok and refused.error is not None
    assert refused.error["code"] == "not_found" and "refused: a" in refused.error["message"]


# -- a composition -------------------------------------------------------------------

MIXED = {
    "name": "mixed.describe",
    "steps": [
        {"id": "remote", "tool": "remotekit.where"},
        {"id": "shout", "tool": "localkit.shout", "args": {"text": "$steps.remote.output.version"}},
        {"id": "local", "tool": "localkit.where"},
        {
            "id": "doubled",
            "tool": "remotekit.checked",
            "args": {"items": [1, 2]},
            "depends_on": ["shout"],
        },
        {
            "id": "refused",
            "tool": "remotekit.refuse",
            "args": {"why": "$steps.shout.output"},
            "on_error": "continue",
            "default": "none",
        },
    ],
    "output": {
        "remote": "$steps.remote.output",
        "local": "$steps.local.output",
        "shout": "$steps.shout.output",
        "doubled": "$steps.doubled.output",
        "refused": "$steps.refused.output",
    },
}


async def test_a_composition_runs_steps_on_a_remote_and_a_local_plugin(
    ray_cluster: Any, cluster_home: Home, tmp_path: Path
) -> None:
    cfg = config(allow_unsigned=True)
    async with ray_host(cluster_home, cfg, [localkit(tmp_path)]) as host:
        await host.call("remotekit.where", {})
        host.add_composition(composition_from_data(MIXED))
        out = await host.call("mixed.describe", {})
        # The same, with the remote step's error failing the run.
        refused = {
            "id": "refused",
            "tool": "remotekit.refuse",
            "args": {"why": "$steps.shout.output"},
        }
        failing = {**MIXED, "name": "mixed.failing", "steps": [*MIXED["steps"][:-1], refused]}
        host.add_composition(composition_from_data(failing))
        with pytest.raises(CompositionFailed) as info:
            await host.call("mixed.failing", {})
    assert remote_parent(out["remote"]) and out["remote"]["version"] == "1.0.0"
    assert out["local"]["ppid"] == os.getpid()
    assert out["shout"] == "1.0.0!"
    assert [d["value"] for d in out["doubled"]] == [2, 4]
    assert out["refused"] == "none"
    err = info.value
    assert isinstance(err, MCPHostError)
    assert err.data["step"] == "refused"
    assert err.data["error"]["code"] == "not_found"
    assert "refused: 1.0.0!" in err.data["error"]["message"]
