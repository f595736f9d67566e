"""Calls to a batch tool are counted in the tool's call metrics by its batcher, a batch
at a time: each call exactly once, with its own outcome and duration, as a call to any
other tool is counted. Real workers; the counting of a batch is checked against
counting its calls one by one."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from batch_hosts import serving
from hypothesis import given, settings
from hypothesis import strategies as st
from test_batching import batchy_source, holding, queued, samples

from mcphost.host import Host
from mcphost.host.observe import HostMetrics
from mcphost.host.observe import calls as calls_module
from mcphost.host.observe.calls import RECENT
from mcphost.host.observe.export import render
from mcphost.sdk.errors import Busy, ToolTimeout


def _host(tmp_path: Path, **batching: Any) -> Host:
    return serving(tmp_path, batchy_source(tmp_path), None, **batching)


def _outcomes(text: str, tool: str) -> dict[str, float]:
    found = samples(text)
    return {
        dict(labels)["outcome"]: v
        for (name, labels), v in found.items()
        if name == "mcphost_tool_calls_total" and dict(labels)["tool"] == tool
    }


async def test_concurrent_batched_calls_are_each_counted_once_with_their_durations(
    tmp_path: Path,
) -> None:
    async with _host(tmp_path) as host:
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(host.call("batchy.tag", {"items": [i]}) for i in range(64))
        )
        wall = time.perf_counter() - t0
        assert host.metrics is not None
        text = render(host.metrics, host).decode()
        route = host.metrics.routes["batchy.tag"]
        largest = host.batching()["batchy.tag"]["largest_batch"]

    assert [r[0]["value"] for r in results] == list(range(64))
    assert largest > 1  # some calls did share a batch
    assert _outcomes(text, "batchy.tag") == {"ok": 64}
    found = samples(text)
    labels = frozenset({("plugin", "batchy"), ("tool", "batchy.tag")})
    assert found[("mcphost_tool_call_duration_seconds_count", labels)] == 64
    assert 0 < found[("mcphost_tool_call_duration_seconds_sum", labels)] <= 64 * wall
    assert found[("mcphost_tool_calls_in_flight", frozenset({("plugin", "batchy")}))] == 0
    durations = route.recent_durations()
    assert len(durations) == 64 and all(0 <= d <= wall for d in durations)


async def test_queued_calls_are_counted_by_how_they_ended(tmp_path: Path) -> None:
    # While one call holds the worker, plain calls queue: two run, one is cancelled by
    # its caller, one runs out of time in the queue, one finds the queue full.
    async with _host(
        tmp_path,
        max_queue_size=4,
        levels=1,
        default_priority=0,
        max_queue_delay=10.0,
        max_in_flight=1,
    ) as host:
        first = await holding(host)
        ran = [asyncio.ensure_future(host.call("batchy.held", {"items": [i]})) for i in (1, 2)]
        gone = asyncio.ensure_future(host.call("batchy.held", {"items": [3]}))
        late = asyncio.ensure_future(host.call("batchy.held", {"items": [4]}, timeout=0.2))
        await queued()
        with pytest.raises(Busy):
            await host.call("batchy.held", {"items": [5]})
        gone.cancel()
        assert host.metrics is not None
        plugin = host.metrics.plugins["batchy"]
        # The first call and the four queued ones are in flight until they end.
        assert plugin.in_flight == 5
        # The short call's time runs out behind the others, not when the batch ends.
        with pytest.raises(ToolTimeout):
            await asyncio.wait_for(late, 5.0)
        assert await host.call("batchy.arrived") == [0]  # still held
        await host.call("batchy.release")
        await asyncio.gather(first, *ran, gone, return_exceptions=True)
        text = render(host.metrics, host).decode()
        in_flight = plugin.in_flight
        seen = await host.call("batchy.seen")

    assert sorted(seen) == [0, 1, 2]
    assert _outcomes(text, "batchy.held") == {"ok": 3, "busy": 1, "cancelled": 1, "tool_timeout": 1}
    assert in_flight == 0
    found = samples(text)
    labels = frozenset({("plugin", "batchy"), ("tool", "batchy.held")})
    assert found[("mcphost_tool_call_duration_seconds_count", labels)] == 6


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(st.floats(min_value=0.0, max_value=400.0), max_size=300),
    waits=st.lists(st.floats(min_value=0.0, max_value=400.0), min_size=1, max_size=300),
)
def test_a_batch_counted_at_once_counts_as_its_calls_one_by_one(
    before: list[float], waits: list[float]
) -> None:
    now = 10_000.0
    at_once, one_by_one = HostMetrics(), HostMetrics()
    a, b = at_once.route("kit.t", "kit"), one_by_one.route("kit.t", "kit")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(calls_module, "_now", lambda: now)
        for r in (a, b):
            for w in before:
                r.begun += 1
                r.done(now - w)
        starts = [now - w for w in waits]
        a.begun += len(starts)
        a.answered(starts, now)
        for t in starts:
            b.begun += 1
            b.done(t)
    assert a.buckets == b.buckets
    assert (a.ok, a.begun, a.ended) == (b.ok, b.begun, b.ended)
    assert a.sum == pytest.approx(b.sum, rel=1e-9, abs=1e-6)
    if len(waits) < RECENT:
        assert a.recent == b.recent  # the same calls in the same places of the ring
    else:
        assert sorted(a.recent) == sorted(b.recent)
    assert at_once.plugins["kit"].in_flight == 0
