"""Admission by priority preempts: a stream of a higher priority that finds no place
suspends the running stream of the lowest priority below its own, instead of waiting
for it to end. The suspended stream loses nothing and gets a place back before any
waiter that is not of a higher priority. Property tests of the decisions, then real
workers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcphost.host import Host
from mcphost.host.flow import Admission, AdmissionLimits
from mcphost.host.flow.admission import Ticket
from mcphost.sdk.errors import Busy

# -- the decisions ------------------------------------------------------------------------

arrive = st.tuples(st.just("arrive"), st.sampled_from("ab"), st.integers(0, 4))
finish = st.tuples(st.just("finish"), st.just(""), st.integers(0, 1000))
steps = st.lists(st.one_of(arrive, finish), max_size=60)


def _check(adm: Admission, holding: list[Ticket], lim: AdmissionLimits) -> None:
    """What must hold once admission has made its decisions."""
    q = adm.queue
    assert q.running == len(holding) <= lim.max_concurrent
    for plugin, n in q.per_plugin.items():
        assert n == sum(t.plugin == plugin for t in holding) <= lim.max_concurrent_per_plugin
    for w in q.waiting.values():
        # Nobody of a lower priority holds a place this waiter could have taken.
        plugin_full = q.per_plugin.get(w.plugin, 0) >= lim.max_concurrent_per_plugin
        could_take = [t for t in holding if not plugin_full or t.plugin == w.plugin]
        assert all(t.priority <= w.priority for t in could_take), (w.priority, could_take)
    for t in adm._suspended:
        # A suspended stream waits only for lack of room or for a higher waiter.
        room = q.has_room(t.plugin, lim.max_concurrent, lim.max_concurrent_per_plugin)
        assert not room or any(w.priority < t.priority for w in q.waiting.values())


@settings(max_examples=150, deadline=None)
@given(ops=steps, limit=st.integers(1, 3), per_plugin=st.integers(1, 3))
def test_no_waiter_waits_on_a_lower_priority_and_every_stream_ends(
    ops: list[tuple[str, str, int]], limit: int, per_plugin: int
) -> None:
    lim = AdmissionLimits(limit, per_plugin, 60.0, 1000.0, True)

    async def scenario() -> None:
        adm = Admission(lambda: lim)
        holding: list[Ticket] = []
        suspended: list[Ticket] = []
        calls: list[asyncio.Task[Ticket]] = []

        def own(ticket: Ticket) -> None:
            def suspend() -> None:
                holding.remove(ticket)
                suspended.append(ticket)

            def resume() -> None:
                suspended.remove(ticket)
                holding.append(ticket)

            ticket.suspend, ticket.resume = suspend, resume
            holding.append(ticket)

        async def settle() -> None:
            for _ in range(3):
                await asyncio.sleep(0)
            for task in [c for c in calls if c.done()]:
                calls.remove(task)
                own(task.result())
            _check(adm, holding, lim)

        for op, plugin, n in ops:
            if op == "arrive":
                calls.append(asyncio.create_task(adm.admit(plugin, f"{plugin}.t", n)))
            elif holding or suspended:
                pool = holding + suspended
                adm.release(pool[n % len(pool)])
                for group in (holding, suspended):
                    group[:] = [t for t in group if not t.released]
            await settle()
        # Everyone ends in time: each stream admitted (or resumed) finishes.
        while calls or holding or suspended:
            if holding:
                adm.release(holding.pop(0))
            await settle()
            assert holding or not (calls or suspended), "a stream waits with no one running"
        assert adm.running == 0 and adm.suspended == 0 and adm.waiting == 0

    asyncio.run(scenario())


def test_a_stream_whose_owner_cannot_suspend_it_is_never_preempted() -> None:
    async def scenario() -> None:
        adm = Admission(lambda: AdmissionLimits(1, 1, 0.1, 1000.0, True))
        low = await adm.admit("p", "p.low", 9)
        with pytest.raises(Busy):
            await adm.admit("p", "p.high", 0)
        assert adm.suspended == 0 and not low.suspended
        adm.release(low)

    asyncio.run(scenario())


def test_the_lowest_priority_and_most_recent_stream_gives_its_place_first() -> None:
    async def scenario() -> None:
        adm = Admission(lambda: AdmissionLimits(3, 3, 5.0, 1000.0, True))
        log: list[str] = []
        tickets = {}
        for tool, prio in (("old9", 9), ("new9", 9), ("five", 5)):
            t = await adm.admit("p", tool, prio)
            t.suspend = lambda tool=tool: log.append(f"suspend {tool}")
            t.resume = lambda tool=tool: log.append(f"resume {tool}")
            tickets[tool] = t
        high = await adm.admit("p", "high", 0)
        assert log == ["suspend new9"]
        equal = asyncio.create_task(adm.admit("p", "late9", 9))
        await asyncio.sleep(0)
        adm.release(high)
        await asyncio.sleep(0)
        # The suspended stream comes back before a waiter of its own priority.
        assert log == ["suspend new9", "resume new9"] and not equal.done()
        adm.release(tickets["five"])
        late = await equal
        for t in (tickets["old9"], tickets["new9"], late):
            adm.release(t)
        assert adm.running == 0 and adm.suspended == 0

    asyncio.run(scenario())


# -- real workers -----------------------------------------------------------------------


async def _take(stream: Any, n: int) -> list[int]:
    return [(await anext(stream))["i"] for _ in range(n)]


def test_a_high_priority_stream_runs_while_the_low_one_holding_the_place_is_suspended(
    flow_host: Callable[..., Host],
) -> None:
    from mcphost.host.observe.export import render

    async def scenario() -> None:
        async with flow_host(max_concurrent=1, admission_timeout=10) as host:
            low = host.stream("flowkit.endless", {"size": 10}, priority=9)
            got = await _take(low, 5)
            high = [i["i"] async for i in host.stream("flowkit.numbers", {"n": 50}, priority=0)]
            assert high == list(range(50)), "the high-priority stream did not run to its end"
            # The low stream was suspended meanwhile and goes on where it was.
            got += await _take(low, 200)
            assert got == list(range(205)), "the suspended stream lost or repeated items"
            await low.aclose()  # type: ignore[attr-defined]
            text = render(host.metrics).decode() if host.metrics is not None else ""
            assert (
                'mcphost_stream_suspensions_total{plugin="flowkit",tool="flowkit.endless"} 1.0'
                in (text)
            ), text

    asyncio.run(scenario())


def test_status_shows_a_suspended_stream_and_preempt_off_makes_the_high_one_wait(
    flow_host: Callable[..., Host],
) -> None:
    async def scenario() -> None:
        async with flow_host(max_concurrent=1, admission_timeout=10) as host:
            low = host.stream("flowkit.endless", {}, priority=9)
            await _take(low, 3)
            high = host.stream("flowkit.endless", {}, priority=0)
            await _take(high, 3)
            states = {(r["priority"], r["state"]) for r in host.streams()}
            assert (9, "suspended") in states and (0, "suspended") not in states, states
            await high.aclose()  # type: ignore[attr-defined]
            await _take(low, 3)
            assert [r["state"] for r in host.streams()] != ["suspended"]
            await low.aclose()  # type: ignore[attr-defined]

        async with flow_host(max_concurrent=1, admission_timeout=0.3, preempt=False) as host:
            low = host.stream("flowkit.endless", {}, priority=9)
            await _take(low, 3)
            with pytest.raises(Busy):
                await _take(host.stream("flowkit.numbers", {"n": 5}, priority=0), 1)
            await low.aclose()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_many_streams_of_mixed_priorities_all_complete_in_order(
    flow_host: Callable[..., Host],
) -> None:
    rng = random.Random(3)

    async def scenario() -> None:
        async with flow_host(max_concurrent=3, max_concurrent_per_plugin=3) as host:

            async def one(prio: int, n: int) -> list[int]:
                out = []
                async for item in host.stream("flowkit.numbers", {"n": n}, priority=prio):
                    out.append(item["i"])
                    if len(out) % 50 == 0:
                        await asyncio.sleep(0)
                return out

            plan = [(rng.randint(0, 5), rng.randint(50, 400)) for _ in range(16)]
            results = await asyncio.wait_for(asyncio.gather(*(one(p, n) for p, n in plan)), 60)
            assert results == [list(range(n)) for _, n in plan]
            assert host.streams() == []

    asyncio.run(scenario())
