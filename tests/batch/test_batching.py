"""Concurrent calls to a batch tool become batch calls: what callers and tools see, with
real workers. The tool below reports the batch each item travelled in, so the tests see
what the worker received."""

from __future__ import annotations

import asyncio
import statistics
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from batch_hosts import serving
from hypothesis import given, settings
from hypothesis import strategies as st
from support.sources import directory_source

from mcphost.host import Host, PluginSource
from mcphost.host.batch.batcher import BatchStats, is_large
from mcphost.host.observe.calls import BUCKETS
from mcphost.sdk.errors import Busy, PluginError, ToolError, ToolTimeout

BATCHY = '''
import threading, time
from mcphost.sdk import Plugin, ToolError

plugin = Plugin("batchy")
_seq = iter(range(1_000_000))
_gate = threading.Event()
_seen: list[int] = []
_arrived: list[int] = []


@plugin.tool(batch=True)
def tag(items: list[int], scale: int = 1, pause: float = 0.0) -> list[dict]:
    """Each item with the size and order of the batch it came in."""
    if pause:
        time.sleep(pause)
    n = next(_seq)
    _seen.extend(items)
    return [{"value": i * scale, "batch": len(items), "order": n} for i in items]


@plugin.tool(batch=True)
def sizes(items: list[str], pause: float = 0.0) -> list[dict]:
    """Each item's length with the order of the batch it came in."""
    if pause:
        time.sleep(pause)
    n = next(_seq)
    return [{"length": len(i), "order": n} for i in items]


@plugin.tool(batch=True)
def short(items: list[int]) -> list[int]:
    """Returns one result too few."""
    return items[:-1]


@plugin.tool(batch=True)
def picky(items: list[int]) -> list[int]:
    """Fails every batch that holds a negative number."""
    if any(i < 0 for i in items):
        raise ToolError("negative numbers are not allowed", code="negative")
    return items


@plugin.tool(batch=True)
def held(items: list[int]) -> list[int]:
    """Waits until ``release`` is called (at most 20 s)."""
    _arrived.extend(items)
    _gate.wait(20)
    _seen.extend(items)
    return items


@plugin.tool
def release() -> None:
    _gate.set()


_gates: dict[str, threading.Event] = {}


@plugin.tool(batch=True)
def gated(items: list[int], gate: str) -> list[int]:
    """Like ``held``, behind the gate of that name (``open_gate``)."""
    _arrived.extend(items)
    _gates.setdefault(gate, threading.Event()).wait(20)
    return items


@plugin.tool
def open_gate(gate: str) -> None:
    _gates.setdefault(gate, threading.Event()).set()


@plugin.tool
def seen() -> list[int]:
    return list(_seen)


@plugin.tool
def arrived() -> list[int]:
    return list(_arrived)
'''


def batchy_source(tmp_path: Path) -> PluginSource:
    return directory_source(tmp_path / "batchy-code", "batchy", BATCHY)


MakeHost = Callable[..., Any]


@pytest.fixture
def batch_host(tmp_path: Path) -> MakeHost:
    """``async with batch_host(**batching) as host``: a host serving batchy."""

    def make(features: dict[str, Any] | None = None, **batching: Any) -> Host:
        return serving(tmp_path, batchy_source(tmp_path), features, **batching)

    return make


async def many(host: Host, name: str, args: list[dict[str, Any]], **kw: Any) -> list[Any]:
    return await asyncio.gather(*(host.call(name, a, **kw) for a in args))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def holding(host: Host) -> asyncio.Future[Any]:
    """A call to ``batchy.held`` that is in the worker, holding it, once this returns."""
    first = asyncio.ensure_future(host.call("batchy.held", {"items": [0]}))
    for _ in range(2000):
        if await host.call("batchy.arrived") == [0]:
            return first
        await asyncio.sleep(0.005)
    raise AssertionError("the held call never reached the worker")


async def queued() -> None:
    """Let the calls just created reach their batch queue (no await on the way)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_concurrent_callers_share_batches_and_each_gets_its_own_results(
    batch_host: MakeHost,
) -> None:
    async with batch_host(max_batch_size=16) as host:
        results = await many(
            host, "batchy.tag", [{"items": [i], "pause": 0.005} for i in range(64)]
        )
        results, stats = results, host.batching()
    assert [r[0]["value"] for r in results] == list(range(64))
    sizes = [r[0]["batch"] for r in results]
    assert max(sizes) > 1, "no call shared a batch"
    assert max(sizes) <= 16
    # Items of one batch share its order number, and the batch holds exactly them.
    by_order: dict[int, list[int]] = {}
    for r in results:
        by_order.setdefault(r[0]["order"], []).append(r[0]["batch"])
    assert all(len(v) == v[0] for v in by_order.values())
    tag = stats["batchy.tag"]
    assert tag["calls"] == 64 and tag["queued"] == 0 and tag["in_flight"] == 0
    assert tag["largest_batch"] == max(sizes)
    assert tag["reasons"]["alone"] + tag["items"] == 64
    assert tag["batches"] == sum(tag["reasons"][r] for r in ("idle", "size", "balance", "deadline"))


@pytest.mark.parametrize("priority", [None, 0], ids=["plain", "with-priority"])
async def test_a_closed_loop_of_callers_settles_into_batches_of_one_size(
    batch_host: MakeHost, priority: int | None
) -> None:
    # 16 callers, each calling again when answered, and batches that may hold them all:
    # a batch that left with most of them must not leave the next with only the rest
    # (15 and 1 would alternate, the worker and the host waiting for each other).
    async with batch_host(max_batch_size=64, max_queue_delay=10.0, max_in_flight=2) as host:
        seen: list[int] = []

        async def caller(k: int) -> None:
            for _ in range(30):
                args = {"items": [k], "pause": 0.002}
                result = await host.call("batchy.tag", args, priority=priority)
                seen.append(result[0]["batch"])

        await asyncio.gather(*(caller(k) for k in range(16)))
        reasons = host.batching()["batchy.tag"]["reasons"]
    settled = seen[len(seen) // 2 :]
    assert reasons["balance"] > 0
    assert 6 <= statistics.median(settled) <= 10, sorted(settled)


async def test_a_caller_with_several_items_gets_its_slice_in_order(batch_host: MakeHost) -> None:
    async with batch_host() as host:
        calls = [{"items": list(range(k * 10, k * 10 + k + 1))} for k in range(8)]
        results = await many(host, "batchy.tag", calls)
    for k, r in enumerate(results):
        assert [x["value"] for x in r] == list(range(k * 10, k * 10 + k + 1))


async def test_one_call_at_a_time_goes_alone(batch_host: MakeHost) -> None:
    async with batch_host(max_queue_delay=5.0) as host:
        results = [await host.call("batchy.tag", {"items": [i]}) for i in range(5)]
    assert [r[0]["batch"] for r in results] == [1] * 5


async def test_calls_that_differ_in_other_arguments_never_share_a_batch(
    batch_host: MakeHost,
) -> None:
    async with batch_host() as host:
        calls = [{"items": [i], "scale": 1 + i % 2, "pause": 0.005} for i in range(40)]
        results = await many(host, "batchy.tag", calls)
    for i, r in enumerate(results):
        assert r[0]["value"] == i * (1 + i % 2)
    orders: dict[int, set[int]] = {}
    for i, r in enumerate(results):
        orders.setdefault(r[0]["order"], set()).add(1 + i % 2)
    assert all(len(scales) == 1 for scales in orders.values())


def test_results_are_the_same_with_batching_off(batch_host: MakeHost) -> None:
    calls = [{"items": [i, i + 1], "scale": 3} for i in range(30)]

    async def scenario(on: bool) -> list[Any]:
        async with batch_host(features={"batching": on}) as host:
            return await many(host, "batchy.tag", calls)

    on, off = run(scenario(True)), run(scenario(False))
    assert [[x["value"] for x in r] for r in on] == [[x["value"] for x in r] for r in off]
    assert all(x["batch"] == 2 for r in off for x in r)  # off: each call alone


def test_a_batch_tool_returning_the_wrong_count_fails_its_callers_clearly(
    batch_host: MakeHost,
) -> None:
    async def scenario() -> list[Any]:
        async with batch_host() as host:
            return await asyncio.gather(
                *(host.call("batchy.short", {"items": [i]}) for i in range(5)),
                return_exceptions=True,
            )

    for outcome in run(scenario()):
        assert isinstance(outcome, PluginError)
        assert "batch tool" in outcome.message and "one result per item" in outcome.message


async def test_a_batch_that_raises_fails_only_the_calls_in_it(batch_host: MakeHost) -> None:
    async with batch_host() as host:
        bad = await asyncio.gather(
            host.call("batchy.picky", {"items": [-1]}), return_exceptions=True
        )
        good = await host.call("batchy.picky", {"items": [1, 2]})
        bad, good = bad[0], good
    assert isinstance(bad, ToolError) and bad.code == "negative"
    assert good == [1, 2]


async def test_a_full_queue_refuses_at_once_with_busy(batch_host: MakeHost) -> None:
    async with batch_host(
        max_queue_size=2, levels=1, default_priority=0, max_queue_delay=10.0, max_in_flight=1
    ) as host:
        first = await holding(host)
        rest = [
            asyncio.ensure_future(host.call("batchy.held", {"items": [i]})) for i in range(1, 5)
        ]
        await queued()
        await host.call("batchy.release")
        outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
        outcomes, seen = outcomes, await host.call("batchy.seen")
    busy = [o for o in outcomes if isinstance(o, Busy)]
    assert len(busy) == 2, outcomes
    assert all(o.code == "busy" and "full" in o.message for o in busy)
    assert sorted(seen) == [0, 1, 2]  # the refused calls never ran


def test_a_high_priority_call_overtakes_the_queue(batch_host: MakeHost) -> None:
    async def scenario() -> list[int]:
        async with batch_host(max_batch_size=1, max_queue_delay=10.0, max_in_flight=1) as host:
            first = await holding(host)
            low = [
                asyncio.ensure_future(host.call("batchy.held", {"items": [i]}, priority=2))
                for i in range(1, 4)
            ]
            await queued()
            high = asyncio.ensure_future(host.call("batchy.held", {"items": [99]}, priority=0))
            await queued()
            await host.call("batchy.release")
            await asyncio.gather(first, *low, high)
            seen: list[int] = await host.call("batchy.seen")
            return seen

    assert run(scenario()) == [0, 99, 1, 2, 3]


async def test_a_call_whose_time_runs_out_in_the_queue_never_runs(batch_host: MakeHost) -> None:
    async with batch_host(max_queue_delay=10.0, max_in_flight=1) as host:
        first = await holding(host)
        late = await asyncio.gather(
            host.call("batchy.held", {"items": [7]}, timeout=0.1), return_exceptions=True
        )
        cancelled = asyncio.ensure_future(host.call("batchy.held", {"items": [8]}))
        await queued()
        cancelled.cancel()
        await host.call("batchy.release")
        await first
        late, seen = late[0], await host.call("batchy.seen")
    assert isinstance(late, ToolTimeout)
    assert seen == [0]


def test_arguments_without_a_list_reach_the_worker_and_its_error(batch_host: MakeHost) -> None:
    async def scenario() -> Any:
        async with batch_host() as host:
            return await asyncio.gather(
                host.call("batchy.tag", {"items": 3}), return_exceptions=True
            )

    (outcome,) = run(scenario())
    assert isinstance(outcome, PluginError) and outcome.code == "invalid_arguments"


async def test_batching_settings_apply_to_the_next_calls_without_a_restart(
    batch_host: MakeHost,
) -> None:
    async with batch_host(max_batch_size=4) as host:
        calls = [{"items": [i], "pause": 0.005} for i in range(24)]
        before = await many(host, "batchy.tag", calls)
        off_cfg = host.config.features.model_copy(update={"batching": False})
        host.reconfigure(host.config.model_copy(update={"features": off_cfg}))
        off = await many(host, "batchy.tag", calls)
        bigger = host.config.batching.model_copy(update={"max_batch_size": 16})
        host.reconfigure(
            host.config.model_copy(
                update={
                    "features": host.config.features.model_copy(update={"batching": True}),
                    "batching": bigger,
                }
            )
        )
        after = await many(host, "batchy.tag", calls)
        before, off, after = before, off, after
    assert 1 < max(r[0]["batch"] for r in before) <= 4
    assert {r[0]["batch"] for r in off} == {1}
    assert max(r[0]["batch"] for r in after) > 4


async def test_among_concurrent_calls_only_the_batch_that_raised_fails(
    batch_host: MakeHost,
) -> None:
    async with batch_host(max_batch_size=4) as host:
        first = await holding(host)
        calls = [
            asyncio.ensure_future(host.call("batchy.picky", {"items": [i]}))
            for i in [1, 2, 3, -4, 5, 6, 7, 8, 9, 10, 11, 12]
        ]
        await queued()
        await host.call("batchy.release")
        await first
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert isinstance(outcomes[3], ToolError) and outcomes[3].code == "negative"
    assert all(isinstance(o, ToolError) and o.code == "negative" for o in failed)
    assert len(failed) <= 4  # the batch of the negative number, no other
    ok = [(i, o) for i, o in enumerate(outcomes) if not isinstance(o, BaseException)]
    assert len(ok) >= 8
    assert all(o == [[1, 2, 3, -4, 5, 6, 7, 8, 9, 10, 11, 12][i]] for i, o in ok)


async def test_calls_queued_when_the_host_closes_fail_with_a_reason(batch_host: MakeHost) -> None:
    host = batch_host(max_queue_delay=10.0, max_in_flight=1)
    await host.start()
    first = await holding(host)
    waiting = [asyncio.ensure_future(host.call("batchy.held", {"items": [i]})) for i in (1, 2)]
    await queued()
    await host.close()
    outcomes = await asyncio.gather(first, *waiting, return_exceptions=True)
    first, *waiting = list(outcomes)
    assert isinstance(first, PluginError)  # its worker was stopped under it
    for outcome in waiting:
        assert isinstance(outcome, PluginError)
        assert "host closed before the call was sent" in outcome.message


async def test_a_priority_call_overtakes_plain_calls_queued_before_it(batch_host: MakeHost) -> None:
    async with batch_host(max_batch_size=2, max_queue_delay=10.0, max_in_flight=1) as host:
        first = await holding(host)
        plain = [
            asyncio.ensure_future(host.call("batchy.held", {"items": [i]})) for i in range(1, 6)
        ]
        await queued()
        plain[1].cancel()  # its caller goes away: it never runs
        await queued()
        high = asyncio.ensure_future(host.call("batchy.held", {"items": [99]}, priority=0))
        await queued()
        await host.call("batchy.release")
        outcomes = await asyncio.gather(first, *plain, high, return_exceptions=True)
        seen: list[int] = await host.call("batchy.seen")
        seen, outcomes = seen, outcomes
    assert isinstance(outcomes[2], asyncio.CancelledError)
    # The high call went first after the held one, on its own: calls of a lower level
    # do not ride with it (batches of two). The cancelled call 2 never ran.
    assert seen == [0, 99, 1, 3, 4, 5]


async def arrived(host: Host, want: list[int]) -> list[int]:
    """What reached ``batchy.held`` in the worker, once it is ``want`` (at most 10 s)."""
    got: list[int] = []
    for _ in range(2000):
        got = await host.call("batchy.arrived")
        if got == want:
            break
        await asyncio.sleep(0.005)
    return got


async def test_a_high_call_leaves_at_once_while_low_ones_keep_a_slot_free_for_it(
    batch_host: MakeHost,
) -> None:
    # Two batches may run at once, and a call waits for others 0 s: without the rule,
    # the queued low calls would take the second slot at once.
    async with batch_host(max_queue_delay=0.0, max_in_flight=2, priority_window=30.0) as host:
        await host.call("batchy.open_gate", {"gate": "open"})
        # A level-0 call came: for 30 s lower levels yield to level 0.
        await host.call("batchy.gated", {"items": [7], "gate": "open"}, priority=0)
        shut = {"gate": "shut"}
        first = asyncio.ensure_future(host.call("batchy.gated", {"items": [0], **shut}, priority=2))
        assert await arrived(host, [7, 0]) == [7, 0]
        low = [
            asyncio.ensure_future(host.call("batchy.gated", {"items": [i], **shut}, priority=2))
            for i in (1, 2)
        ]
        await queued()
        # A round trip to the worker later, the low calls still wait: the second slot
        # is kept for level 0.
        assert await host.call("batchy.arrived") == [7, 0]
        high = asyncio.ensure_future(host.call("batchy.gated", {"items": [99], **shut}, priority=0))
        # The high call reaches the worker while the low batch still holds it.
        before_opening = await arrived(host, [7, 0, 99])
        await host.call("batchy.open_gate", shut)
        results = await asyncio.gather(first, *low, high)
        stats = host.batching()["batchy.gated"]
    assert before_opening == [7, 0, 99]
    assert results == [[0], [1], [2], [99]]
    assert stats["reasons"]["priority"] == 1


def test_large_items_never_share_a_batch_with_small_ones(batch_host: MakeHost) -> None:
    lengths = [1, 500, 2, 3, 700, 4, 5, 900] * 6

    async def scenario() -> list[Any]:
        async with batch_host(large_item_bytes=100) as host:
            calls = [{"items": ["x" * n], "pause": 0.002} for n in lengths]
            return await many(host, "batchy.sizes", calls)

    results = run(scenario())
    assert [r[0]["length"] for r in results] == lengths
    lanes: dict[int, set[bool]] = {}
    for r in results:
        lanes.setdefault(r[0]["order"], set()).add(r[0]["length"] >= 100)
    assert all(len(kinds) == 1 for kinds in lanes.values()), lanes
    assert len(lanes) < len(lengths)  # and calls did share batches


@pytest.mark.parametrize(
    ("value", "large"),
    [
        ([1], False),
        (["x" * 90], False),
        (["x" * 100], True),
        ([{"k": "v" * 60, "w": ["y" * 40]}], True),
        ([[1, 2, 3]] * 3, False),
        (list(range(50)), True),
        ((b"z" * 120,), True),
    ],
)
def test_the_size_estimate_tells_large_from_small(value: Any, large: bool) -> None:
    assert is_large(value, 100) is large


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


async def test_batching_is_measured_in_the_metrics_registry(batch_host: MakeHost) -> None:
    from mcphost.host.observe.export import render

    async with batch_host(
        max_batch_size=8, max_queue_size=3, levels=1, default_priority=0, max_in_flight=1
    ) as host:
        await many(host, "batchy.tag", [{"items": [i], "pause": 0.005} for i in range(3)])
        first = await holding(host)
        held = [asyncio.ensure_future(host.call("batchy.held", {"items": [i]})) for i in (1, 2, 3)]
        await queued()
        refused = await asyncio.gather(
            host.call("batchy.held", {"items": [4]}), return_exceptions=True
        )
        assert host.metrics is not None
        during = samples(render(host.metrics, host).decode())
        await host.call("batchy.release")
        await asyncio.gather(first, *held)
        after = samples(render(host.metrics, host).decode())
        stats = host.batching()

    assert isinstance(refused[0], Busy)
    tag, hold = {("tool", "batchy.tag")}, {("tool", "batchy.held")}
    assert during[("mcphost_batch_queued", frozenset(hold))] == 3
    assert during[("mcphost_batch_in_flight", frozenset(hold))] == 1
    reject = frozenset({("tool", "batchy.held"), ("reason", "queue_full")})
    assert after[("mcphost_batch_rejected_total", reject)] == 1
    assert after[("mcphost_batch_calls_total", frozenset(tag))] == 3
    assert after[("mcphost_batch_calls_total", frozenset(hold))] == 5
    answered = stats["batchy.held"]["batches"] + stats["batchy.held"]["reasons"]["alone"]
    assert after[("mcphost_batch_size_count", frozenset(hold))] == answered
    assert after[("mcphost_batch_size_sum", frozenset(hold))] == 4  # the items that ran
    for reason in ("alone", "idle", "size", "balance", "deadline"):
        key = frozenset({("tool", "batchy.held"), ("reason", reason)})
        assert after[("mcphost_batches_total", key)] == stats["batchy.held"]["reasons"][reason]
    waited = frozenset({("tool", "batchy.held"), ("priority", "0")})
    assert after[("mcphost_batch_queue_wait_seconds_count", waited)] == 3
    assert after[("mcphost_batch_queue_wait_seconds_sum", waited)] > 0
    assert 0 < after[("mcphost_batch_fill_ratio", frozenset(hold))] <= 1
    assert after[("mcphost_pool_replicas", frozenset({("plugin", "batchy")}))] == 1


async def test_status_shows_each_batch_tools_queue(batch_host: MakeHost) -> None:
    from mcphost.host.observe.control import ask

    async with batch_host(max_queue_delay=10.0, max_in_flight=1) as host:
        first = await holding(host)
        waiting = [asyncio.ensure_future(host.call("batchy.held", {"items": [i]})) for i in (1, 2)]
        await queued()
        assert host.control is not None
        answer = await asyncio.to_thread(ask, host.control.path, {"get": "status"})
        await host.call("batchy.release")
        await asyncio.gather(first, *waiting)
    rows = {q["tool"]: q for q in answer["status"]["queues"]}
    assert rows["batchy.held"]["queued"] == 2 and rows["batchy.held"]["in_flight"] == 1
    assert rows["batchy.held"]["calls"] == 3


async def test_a_priority_that_is_not_a_level_is_refused_before_anything_runs(
    batch_host: MakeHost,
) -> None:
    from mcphost.sdk.errors import InvalidArguments

    async with batch_host() as host:
        for bad in (-1, 101, "high", True, 1.5):
            with pytest.raises(InvalidArguments, match="priority must be a whole number"):
                await host.call("batchy.tag", {"items": [1]}, priority=bad)
        assert await host.call("batchy.seen") == []
        assert (await host.call("batchy.tag", {"items": [1]}, priority=0))[0]["value"] == 1


def test_a_batch_of_several_levels_counts_each_calls_wait_under_its_level() -> None:
    # A batch formed in the former may mix levels, in any order: (future, args, items,
    # deadline, enqueued, level), leaving at 10 s.
    stats = BatchStats()
    stats.waited_all([(None, {}, 1, 0.0, 9.0, 0)], 10.0)  # type: ignore[list-item]
    batch = [(None, {}, 1, 0.0, t, level) for t, level in ((9.5, 0), (9.9, 1), (5.0, 0))]
    stats.waited_all(batch, 10.0)  # type: ignore[arg-type]
    assert stats.wait_seconds == pytest.approx({0: 1.0 + 0.5 + 5.0, 1: 0.1})
    assert sum(stats.wait_buckets[0]) == 3 and sum(stats.wait_buckets[1]) == 1
    assert stats.wait_buckets[0][bisect_left(BUCKETS, 5.0)] == 1


@settings(max_examples=300, deadline=None)
@given(
    waits=st.lists(
        st.floats(min_value=0.0, max_value=400.0, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=80,
    )
)
def test_calls_leaving_in_the_order_they_came_are_counted_as_one_by_one(
    waits: list[float],
) -> None:
    # Plain calls leave oldest first: their waits are counted per bucket crossed. The
    # histogram and the total must be those of counting every call on its own.
    now = 1_000.0
    enqueued = sorted(now - w for w in waits)
    by_bucket, one_by_one = BatchStats(), BatchStats()
    by_bucket.waited_in_order(2, enqueued, now)
    one_by_one.waited_all([(None, {}, 1, 0.0, t, 2) for t in enqueued], now)  # type: ignore[misc]
    assert by_bucket.wait_buckets == one_by_one.wait_buckets
    assert by_bucket.wait_seconds[2] == pytest.approx(one_by_one.wait_seconds[2], abs=1e-6)


def test_a_batcher_timer_fires_once_not_again_and_again_before_its_time() -> None:
    # The batcher keeps time on perf_counter; uvloop's timers move in steps of a
    # millisecond and may fire a step early. A timer set again each time it fired
    # early would spin the loop until the time came.
    from mcphost.host.batch import batcher as batcher_module
    from mcphost.sandbox.loops import loop_factory

    async def scenario() -> list[int]:
        async def dispatch(args: dict[str, Any], timeout: float, key: str | None) -> Any:
            return []

        b = batcher_module.ToolBatcher("kit.t", "items", dispatch)
        fired = []
        for delay in (0.0003, 0.0041, 0.002):
            when = batcher_module._clock() + delay
            count = 0
            due: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def look(when: float = when, due: asyncio.Future[None] = due) -> None:
                # What _kick does with a timer that fired.
                nonlocal count
                count += 1
                if batcher_module._clock() < when:
                    b._arm(when)
                elif not due.done():
                    due.set_result(None)

            b._kick = look  # type: ignore[method-assign]
            b._arm(when)
            await asyncio.wait_for(due, 5.0)
            fired.append(count)
        return fired

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        fired = runner.run(scenario())
    assert all(n <= 2 for n in fired), fired
