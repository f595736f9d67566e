"""Flow control: the admission queue (never more than the limits running, FIFO within a
priority, aging so that no priority starves) and the watermark controller, as property
tests of the decisions alone; then admission with asyncio (``busy`` with how long it
waited and how many were ahead, cancelled waiters, limits changed while it runs)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcphost.host.flow import Admission, AdmissionLimits, AdmissionQueue, Watermarks
from mcphost.sdk.errors import Busy

# -- the admission queue ----------------------------------------------------------------

# One step of a run: a caller arrives (plugin, priority), or a running stream ends.
arrive = st.tuples(st.just("arrive"), st.sampled_from("abcd"), st.integers(0, 6))
finish = st.tuples(st.just("finish"), st.just(""), st.just(0))
steps = st.lists(st.one_of(arrive, finish), max_size=80)


def run(
    ops: list[tuple[str, str, int]], limit: int, per_plugin: int, aging: float
) -> tuple[list[dict[str, Any]], AdmissionQueue]:
    """Play ``ops`` one time unit apart, admitting whoever may run after each; returns
    the admissions (who, when, and everyone who was waiting then)."""
    q = AdmissionQueue()
    running: list[str] = []
    admitted: list[dict[str, Any]] = []
    for now, (op, plugin, prio) in enumerate(ops):
        if op == "arrive":
            q.add(plugin, f"{plugin}.t", prio, float(now))
        elif running:
            q.finish(running.pop(0))
        while True:
            waiting = list(q.waiting.values())
            w = q.pick(float(now), limit, per_plugin, aging)
            if w is None:
                break
            running.append(w.plugin)
            admitted.append({"w": w, "at": float(now), "waiting": waiting})
            assert q.running <= limit
            assert all(n <= per_plugin for n in q.per_plugin.values())
    return admitted, q


@settings(max_examples=200, deadline=None)
@given(ops=steps, limit=st.integers(1, 4), per_plugin=st.integers(1, 4))
def test_never_more_than_the_limits_run(
    ops: list[tuple[str, str, int]], limit: int, per_plugin: int
) -> None:
    _, q = run(ops, limit, per_plugin, aging=5.0)
    assert q.running <= limit
    assert sum(q.per_plugin.values()) == q.running
    # Nobody waits while there is room for them.
    for w in q.waiting.values():
        assert q.running >= limit or q.per_plugin.get(w.plugin, 0) >= per_plugin


@settings(max_examples=200, deadline=None)
@given(ops=steps, limit=st.integers(1, 4), aging=st.floats(0.5, 50))
def test_callers_of_one_priority_are_admitted_in_the_order_they_came(
    ops: list[tuple[str, str, int]], limit: int, aging: float
) -> None:
    # No plugin limit below the host's: the order is the queue's alone.
    admitted, _ = run(ops, limit, limit, aging)
    last: dict[int, int] = {}
    for a in admitted:
        w = a["w"]
        assert w.seq > last.get(w.priority, -1), "a later caller of the same priority went first"
        last[w.priority] = w.seq


@settings(max_examples=200, deadline=None)
@given(ops=steps, limit=st.integers(1, 3), aging=st.floats(0.5, 20))
def test_aging_bounds_how_long_after_a_caller_another_may_overtake_it(
    ops: list[tuple[str, str, int]], limit: int, aging: float
) -> None:
    """No starvation: whoever is admitted ahead of a waiting caller ``b`` arrived at the
    latest (priority difference) x aging after ``b``, so a caller of any priority is
    admitted before everyone who comes after it by more than 6 x aging (priorities span
    0..6, 0 the highest)."""
    admitted, _ = run(ops, limit, limit, aging)
    for a in admitted:
        w = a["w"]
        for b in a["waiting"]:
            if b is w:
                continue
            assert w.arrived <= b.arrived + (b.priority - w.priority) * aging + 1e-9


@settings(max_examples=100, deadline=None)
@given(prios=st.lists(st.integers(0, 6), min_size=1, max_size=30))
def test_a_low_priority_caller_under_a_flood_of_high_ones_is_admitted(prios: list[int]) -> None:
    """One place, one caller of priority 6 and a new caller of priority 0 every time
    unit: the low one runs within 6 x aging plus one place's turn."""
    q = AdmissionQueue()
    aging = 2.0
    q.start("x")  # the one place is taken
    low = q.add("x", "x.low", 6, 0.0)
    t = 0.0
    while True:
        t += 1.0
        q.add("x", "x.high", 0, t)
        q.finish("x")
        w = q.pick(t, 1, 1, aging)
        assert w is not None
        if w is low:
            break
        assert t <= 6 * aging + 1, "the low-priority caller starved"
    assert t <= 6 * aging + 1


def test_a_caller_whose_plugin_is_at_its_limit_lets_the_next_one_through() -> None:
    q = AdmissionQueue()
    q.start("a")
    first = q.add("a", "a.t", 5, 0.0)
    second = q.add("b", "b.t", 0, 0.0)
    assert q.pick(0.0, 4, 1, 1.0) is second
    assert q.pick(0.0, 4, 1, 1.0) is None
    q.finish("a")
    assert q.pick(0.0, 4, 1, 1.0) is first
    assert q.ahead_of(first, 0.0, 1.0) == 0


# -- watermarks -------------------------------------------------------------------------

marks_ops = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.integers(0, 400)),
        st.tuples(st.just("take"), st.just(0)),
        st.tuples(st.just("hold"), st.integers(0, 400)),
        st.tuples(st.just("release"), st.just(0)),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(ops=marks_ops, high=st.integers(0, 1000), frac=st.floats(0, 1))
def test_watermarks_pause_above_high_and_resume_at_or_below_low(
    ops: list[tuple[str, int]], high: int, frac: float
) -> None:
    low = int(high * frac)
    clock = [0.0]
    events: list[bool] = []
    resumes: list[int] = []
    m = Watermarks(high, low, clock=lambda: clock[0], on_pause=events.append)
    m.resume = lambda: resumes.append(m.buffered)
    items: list[int] = []
    held: list[int] = []
    for op, size in ops:
        clock[0] += 1.0
        was = m.paused
        if op == "arrive":
            items.append(size)
            m.arrived(size)
        elif op == "hold":
            held.append(size)
            m.hold(size)
        elif op == "take" and items:
            m.taken(items.pop(0))
        elif op == "release" and held:
            m.release(held.pop(0))
        else:
            continue
        assert m.buffered == sum(items) + sum(held)
        if op in ("arrive", "hold"):
            # Growing: it pauses exactly when passing high, never resumes.
            assert m.paused == (was or m.buffered > high)
        else:
            # Shrinking: it resumes exactly at or below low, never pauses.
            assert m.paused == (was and m.buffered > low)
    assert events == [i % 2 == 0 for i in range(len(events))], "pause and resume alternate"
    assert m.pauses == events.count(True)
    assert len(resumes) == events.count(False)
    assert all(b <= low for b in resumes)
    assert m.peak >= m.buffered
    assert m.paused_for() <= clock[0]


def test_watermarks_refuse_a_low_mark_above_the_high_one() -> None:
    with pytest.raises(ValueError, match="low <= high"):
        Watermarks(10, 20)


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=200),
    window_items=st.integers(1, 16),
    window_bytes=st.integers(1024, 8192),
    high=st.integers(0, 20000),
    reads=st.lists(st.integers(0, 5), min_size=1, max_size=50),
)
def test_credit_and_watermarks_bound_the_buffer_and_lose_nothing(
    sizes: list[int],
    window_items: int,
    window_bytes: int,
    high: int,
    reads: list[int],
) -> None:
    """A model of one stream: a producer that sends while it has item and byte credit
    (one item may pass the byte window), the host crediting on arrival half a window at
    a time while not paused, and a consumer reading a varying number of items per turn.
    The buffer never passes high + window + one item; every item arrives once, in order."""
    m = Watermarks(high, high // 4)
    granted, granted_bytes = window_items, window_bytes
    sent = sent_bytes = 0
    owed = owed_bytes = 0
    wire: list[tuple[int, int]] = []
    buffer: list[tuple[int, int]] = []
    got: list[int] = []
    turn = 0

    def credit() -> None:
        nonlocal granted, granted_bytes, owed, owed_bytes
        granted += owed
        granted_bytes += owed_bytes
        owed = owed_bytes = 0

    m.resume = credit
    while len(got) < len(sizes):
        while sent < len(sizes) and sent < granted and sent_bytes < granted_bytes:
            wire.append((sent, sizes[sent]))
            sent_bytes += sizes[sent]
            sent += 1
        while wire:
            seq, size = wire.pop(0)
            buffer.append((seq, size))
            m.arrived(size)
            owed += 1
            owed_bytes += size
            if not m.paused and (
                owed >= max(1, window_items // 2) or owed_bytes >= window_bytes // 2
            ):
                credit()
            assert m.buffered <= high + window_bytes + max(sizes)
        n = reads[turn % len(reads)] or (1 if not wire and sent == granted else 0)
        turn += 1
        if turn > 10 * len(sizes) + 100:
            n = max(n, 1)
        for _ in range(n):
            if buffer:
                seq, size = buffer.pop(0)
                m.taken(size)
                got.append(seq)
        assert turn < 100 * len(sizes) + 1000, "the stream stalled"
    assert got == list(range(len(sizes)))


# -- admission with asyncio ---------------------------------------------------------------


def limits(**kw: Any) -> AdmissionLimits:
    base = {"max_concurrent": 2, "max_concurrent_per_plugin": 2, "timeout": 5.0, "aging": 1.0}
    base.update(kw)
    return AdmissionLimits(**base)


def test_a_caller_waiting_past_the_admission_timeout_is_told_busy_with_the_figures() -> None:
    async def scenario() -> None:
        current = [limits(max_concurrent=1)]
        adm = Admission(lambda: current[0])
        t1 = await adm.admit("p", "p.a", 0)
        ahead = asyncio.create_task(adm.admit("p", "p.b", 0))
        await asyncio.sleep(0)
        current[0] = limits(max_concurrent=1, timeout=0.2)  # for the next caller only
        with pytest.raises(Busy) as info:
            await adm.admit("p", "p.c", 5)
        err = info.value
        assert err.code == "busy"
        assert err.data["ahead"] == 1
        assert err.data["running"] == 1
        assert err.data["waited"] >= 0.2
        assert "streaming.admission_timeout" in err.message and "1 ahead" in err.message
        assert [w["tool"] for w in adm.snapshot()] == ["p.b"]
        adm.release(t1)
        t2 = await ahead
        assert t2.tool == "p.b" and adm.running == 1 and adm.waiting == 0
        adm.release(t2)
        adm.release(t2)  # a second release is ignored
        assert adm.running == 0

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_queue_and_admission_goes_on() -> None:
    async def scenario() -> None:
        adm = Admission(lambda: limits(max_concurrent=1))
        t1 = await adm.admit("p", "p.a", 0)
        gone = asyncio.create_task(adm.admit("p", "p.gone", 0))
        nxt = asyncio.create_task(adm.admit("p", "p.next", 0))
        await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert adm.waiting == 1
        adm.release(t1)
        assert (await nxt).tool == "p.next"

    asyncio.run(scenario())


def test_a_limit_raised_while_callers_wait_admits_them_and_a_lowered_one_lets_streams_finish() -> (
    None
):
    async def scenario() -> None:
        current = [limits(max_concurrent=1)]
        adm = Admission(lambda: current[0])
        t1 = await adm.admit("p", "p.a", 0)
        waiting = asyncio.create_task(adm.admit("p", "p.b", 0))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        current[0] = limits(max_concurrent=2)  # raised live: admitted without a release
        t2 = await asyncio.wait_for(waiting, 5)
        assert adm.running == 2
        current[0] = limits(max_concurrent=1)  # lowered: both keep running
        third = asyncio.create_task(adm.admit("p", "p.c", 0))
        adm.release(t1)
        await asyncio.sleep(0.05)
        assert not third.done(), "admitted while the lowered limit was still reached"
        adm.release(t2)
        t3 = await asyncio.wait_for(third, 5)
        assert adm.running == 1
        adm.release(t3)

    asyncio.run(scenario())


def test_a_high_priority_caller_goes_before_earlier_low_ones() -> None:
    async def scenario() -> None:
        adm = Admission(lambda: limits(max_concurrent=1, aging=100.0))
        t = await adm.admit("p", "p.a", 0)
        order: list[str] = []

        async def one(tool: str, prio: int) -> None:
            ticket = await adm.admit("p", tool, prio)
            order.append(tool)
            adm.release(ticket)

        tasks = [asyncio.create_task(one(f"p.low{i}", 9)) for i in range(3)]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(one("p.high", 0)))
        await asyncio.sleep(0)
        assert [w["tool"] for w in adm.snapshot()] == ["p.high", "p.low0", "p.low1", "p.low2"]
        adm.release(t)
        await asyncio.gather(*tasks)
        assert order == ["p.high", "p.low0", "p.low1", "p.low2"]

    asyncio.run(scenario())
