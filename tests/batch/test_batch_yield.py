"""Lower priority levels yield to a higher one (``priority_window``): they leave in short
batches of their own and never take the last free slot, so a call of the higher level
leaves at once and waits behind at most one short batch. The rules on their own, then
driven by random calls, cancellations, batches ending and time."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcphost.host.batch import Batch, BatchFormer, FormerSettings, LevelPolicy, Pending
from mcphost.host.batch.model import LatencyModel

LEVELS = (LevelPolicy(), LevelPolicy(), LevelPolicy())


def call(i: int, level: int, at: float = 0.0, **kw: object) -> Pending:
    return Pending(id=i, level=level, enqueued=at, **kw)  # type: ignore[arg-type]


def yielding(window: float = 0.5, **kw: object) -> BatchFormer:
    return BatchFormer(FormerSettings(priority_window=window, **kw))  # type: ignore[arg-type]


def ids(batch: Batch | None) -> list[int]:
    assert batch is not None
    return [p.id for p in batch.items]


# -- single rules ----------------------------------------------------------------------


def test_a_high_call_leaves_at_once_alone_while_a_low_batch_runs() -> None:
    former = yielding(max_queue_delay=10.0)
    for i in range(1, 4):
        former.submit(call(i, level=2), 0.0)
    former.submit(call(9, level=0), 0.001)
    # A level-2 batch runs and one slot of two is free: the high call goes at once, on
    # its own (no lower call rides with it), though its group is not full.
    batch = former.take(0.001, running=[0, 0, 1], slots=2, short=8)
    assert ids(batch) == [9]
    assert batch is not None and batch.reason == "priority"
    # Now both slots are taken: nothing more leaves.
    assert former.take(0.001, running=[1, 0, 1], slots=2, short=8) is None


def test_without_a_window_the_high_call_waits_and_shares_its_batch() -> None:
    former = BatchFormer(FormerSettings(max_queue_delay=10.0, priority_window=0.0))
    for i in range(1, 4):
        former.submit(call(i, level=2), 0.0)
    former.submit(call(9, level=0), 0.001)
    assert former.take(0.001, running=[0, 0, 1], slots=2) is None
    assert ids(former.take(0.001, running=[], slots=2)) == [9, 1, 2, 3]


def test_low_calls_never_take_the_slot_kept_for_a_higher_level() -> None:
    former = yielding(max_queue_delay=0.0)
    former.arrived(0, 0.0)  # a high call came (it went at once)
    for i in range(1, 6):
        former.submit(call(i, level=2), 0.0)
    # One low batch runs, one slot is free: it is kept for level 0.
    assert former.take(0.01, running=[0, 0, 1], slots=2, short=2) is None
    assert former.wakeup(now=0.01, running=[0, 0, 1], slots=2, short=2) == math.inf
    # With three slots the low calls may take the second, in a short batch.
    batch = former.take(0.01, running=[0, 0, 1], slots=3, short=2)
    assert ids(batch) == [1, 2] and batch is not None and batch.reason == "size"
    # Nothing running: they go, still short, as long as level 0 is active.
    assert ids(former.take(0.01, running=[], slots=2, short=2)) == [3, 4]
    # Once the window has passed, nothing yields: the rest go whole, into any slot.
    assert ids(former.take(0.6, running=[0, 0, 1], slots=2, short=2)) == [5]


def test_a_level_is_active_while_its_calls_wait_or_run() -> None:
    former = yielding(window=0.1)
    assert former.top(0.0) is None
    former.submit(call(1, level=1), 0.0)
    assert former.top(5.0) == 1  # still waiting, long after the window
    assert former.top(5.0, running=[1, 0, 0]) == 0
    former.cancel(1)
    assert former.top(5.0) is None
    assert former.top(0.05) == 1  # it arrived within the window


def test_an_aged_low_call_no_longer_yields() -> None:
    former = yielding(max_queue_delay=10.0, aging=1.0)
    former.submit(call(1, level=2), 0.0)
    former.submit(call(2, level=2, at=2.5), 2.5)
    former.submit(call(3, level=0, at=2.5), 2.5)
    # At 2.5 s call 1 has waited 2.5 agings: above level 0, it goes with the high call,
    # while call 2, just come, still yields.
    batch = former.take(2.5, running=[0, 0, 1], slots=3, short=8)
    assert ids(batch) == [1, 3]
    assert ids(former.take(2.5, running=[], slots=3, short=8)) == [2]


def test_the_short_size_follows_the_latency_model() -> None:
    model = LatencyModel(32)
    assert model.yield_size() == 1  # nothing known: one call at a time
    for n in (1, 4, 8, 16, 16, 8, 4, 1):
        model.observe(n, 0.001 + 0.0001 * n)  # 1 ms fixed, 0.1 ms an item
    # Half a batch of one (0.55 ms) buys five items of 0.1 ms.
    assert model.yield_size() == 5
    flat = LatencyModel(32)
    for n in (1, 2, 1, 2):
        flat.observe(n, 0.001)  # no per-item time seen: cautious
    assert flat.yield_size() == 1
    small = LatencyModel(32)
    for n in (1, 2, 1, 2):
        small.observe(n, 0.01 + 1e-7 * n)
    # The fit says an item costs next to nothing, but it was made from batches of one
    # and two: it is trusted up to twice their (weighted) mean size, about 1.4.
    assert small.yield_size() == 2


def test_a_window_that_is_not_a_number_of_seconds_is_refused() -> None:
    with pytest.raises(ValueError, match="priority_window must be a number of seconds"):
        FormerSettings(priority_window=-1.0)
    with pytest.raises(ValueError, match="priority_window"):
        FormerSettings(priority_window=math.inf)


# -- random runs -----------------------------------------------------------------------


@dataclass
class Run:
    fate: dict[int, str] = field(default_factory=dict)
    calls: dict[int, Pending] = field(default_factory=dict)
    #: (when, the batch, the top level then, batches running before it, slots, short)
    batches: list[tuple[float, Batch, int | None, int, int, int]] = field(default_factory=list)


submit = st.tuples(
    st.just("submit"),
    st.integers(0, 2),  # level
    st.sampled_from(["a", "b"]),  # key
    st.one_of(st.none(), st.floats(0.0, 0.05)),  # deadline after now
)
take = st.tuples(st.just("take"), st.integers(1, 4), st.integers(1, 4))  # slots, short
ops = st.lists(
    st.one_of(
        submit,
        submit,
        take,
        take,
        st.tuples(st.just("arrived"), st.integers(0, 2)),
        st.tuples(st.just("cancel"), st.integers(0, 60)),
        st.tuples(st.just("tick"), st.floats(0.0, 0.03)),
        st.tuples(st.just("end"), st.integers(0, 10)),  # a running batch ends
    ),
    min_size=10,
    max_size=100,
)
yield_settings = st.builds(
    FormerSettings,
    max_batch_size=st.integers(1, 6),
    max_queue_delay=st.floats(0.0, 0.02),
    levels=st.just(LEVELS),
    aging=st.one_of(st.none(), st.floats(0.005, 0.05)),
    priority_window=st.floats(0.001, 0.05),
)


def play(cfg: FormerSettings, script: list[tuple[object, ...]]) -> Run:
    run = Run()
    former = BatchFormer(cfg)
    now = 0.0
    next_id = 0
    running: list[list[int]] = []  # the levels of the batches in flight, in order

    def counts() -> list[int]:
        out = [0] * len(cfg.levels)
        for levels in running:
            out[min(levels)] += 1
        return out

    def settle() -> None:
        for p, why in former.expire(now):
            assert p.id not in run.fate, f"call {p.id} answered twice"
            run.fate[p.id] = why

    def take(slots: int, short: int) -> bool:
        settle()
        busy = counts()
        top = former.top(now, busy)
        batch = former.take(now, running=busy, slots=slots, short=short)
        if batch is None:
            when = former.wakeup(now=now, running=busy, slots=slots, short=short)
            # Nothing may leave now, so nothing is due now: a timer at ``when`` would
            # not find the same state and fire again at once.
            assert when is None or when > now or sum(busy) >= slots
            return False
        run.batches.append((now, batch, top, sum(busy), slots, short))
        for p in batch.items:
            assert p.id not in run.fate, f"call {p.id} answered twice"
            run.fate[p.id] = "dispatched"
        running.append([p.level for p in batch.items])
        return True

    for op in script:
        if op[0] == "submit":
            _, level, key, deadline = op
            p = Pending(
                id=next_id,
                level=int(level),  # type: ignore[call-overload]
                enqueued=now,
                key=key,
                deadline=math.inf if deadline is None else now + float(deadline),  # type: ignore[arg-type]
            )
            run.calls[next_id] = p
            if former.submit(p, now) is not None:
                run.fate[next_id] = "refused"
            next_id += 1
        elif op[0] == "arrived":
            former.arrived(int(op[1]), now)  # type: ignore[call-overload]
        elif op[0] == "cancel":
            cid = int(op[1])  # type: ignore[call-overload]
            if former.cancel(cid):
                assert cid not in run.fate
                run.fate[cid] = "cancelled"
        elif op[0] == "tick":
            now += float(op[1])  # type: ignore[arg-type]
        elif op[0] == "end":
            if running:
                running.pop(int(op[1]) % len(running))  # type: ignore[call-overload]
        else:
            _, slots, short = op
            take(int(slots), int(short))  # type: ignore[call-overload]
    # Drain: batches end one by one, time passes; every call ends somewhere.
    for _ in range(4 * next_id + 4):
        if take(2, 2):
            continue
        if running:
            running.pop(0)
        elif len(former) == 0:
            break
        else:
            now += 0.01
    now += 10.0
    settle()
    assert len(former) == 0
    assert set(run.fate) == set(run.calls), "some call was never answered"
    return run


@settings(max_examples=300, deadline=None)
@given(yield_settings, ops)
def test_every_call_is_answered_once_and_no_low_batch_takes_the_kept_slot(
    cfg: FormerSettings, script: list[tuple[object, ...]]
) -> None:
    run = play(cfg, script)
    for at, batch, top, busy, slots, short in run.batches:
        assert busy < slots, "a batch left with every slot taken"
        assert 1 <= len(batch.items) <= cfg.max_batch_size
        assert {(p.key, p.lane) for p in batch.items} == {(batch.key, batch.lane)}
        if top is None:
            continue
        low = [p.priority(at, cfg.aging) > top and p.level > top for p in batch.items]
        # A batch holds yielding calls only, or none.
        assert all(low) or not any(low), "a batch mixed a yielding call with others"
        if all(low):
            assert len(batch.items) <= short, "a yielding batch was not short"
            assert busy == 0 or busy + 1 < slots, "a yielding batch took the kept slot"
        for p in batch.items:
            assert p.deadline > at and p.expires > at
