"""The batch former's rules, on their own: which calls go together, when, and in what
order, driven by random sequences of calls, cancellations, idle replicas and time."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcphost.host.batch import Batch, BatchFormer, FormerSettings, LevelPolicy, Pending


def call(i: int, level: int = 0, at: float = 0.0, **kw: object) -> Pending:
    return Pending(id=i, level=level, enqueued=at, **kw)  # type: ignore[arg-type]


# -- single rules ----------------------------------------------------------------------


def test_a_lone_call_goes_at_once_when_a_replica_is_idle() -> None:
    former = BatchFormer(FormerSettings(max_queue_delay=10.0))
    assert former.submit(call(1), 0.0) is None
    batch = former.take(0.0, idle=True)
    assert batch is not None and batch.reason == "idle"
    assert [p.id for p in batch.items] == [1]
    assert len(former) == 0


def test_with_every_replica_busy_calls_wait_for_each_other_until_the_queue_delay() -> None:
    former = BatchFormer(FormerSettings(max_batch_size=8, max_queue_delay=0.01))
    for i in range(3):
        former.submit(call(i, at=0.001 * i), 0.001 * i)
    assert former.take(0.005, idle=False) is None
    assert former.wakeup() == pytest.approx(0.01)
    batch = former.take(0.01, idle=False)
    assert batch is not None and batch.reason == "deadline"
    assert [p.id for p in batch.items] == [0, 1, 2]


def test_a_full_batch_goes_without_waiting() -> None:
    former = BatchFormer(FormerSettings(max_batch_size=4, max_queue_delay=10.0))
    for i in range(6):
        former.submit(call(i), 0.0)
    batch = former.take(0.0, idle=False)
    assert batch is not None and batch.reason == "size"
    assert [p.id for p in batch.items] == [0, 1, 2, 3]
    assert former.take(0.0, idle=False) is None  # two left: not a full batch
    assert len(former) == 2


def test_preferred_sizes_shape_the_batches() -> None:
    former = BatchFormer(
        FormerSettings(max_batch_size=16, preferred_sizes=(4, 8), max_queue_delay=0.005)
    )
    for i in range(7):
        former.submit(call(i), 0.0)
    # Not yet the largest preferred size: the calls wait for more, up to the delay...
    assert former.take(0.0, idle=False) is None
    # ...and then the largest preferred size that can be formed goes.
    batch = former.take(0.005, idle=False)
    assert batch is not None and batch.reason == "deadline" and len(batch.items) == 4
    batch = former.take(0.005, idle=True)
    assert batch is not None and len(batch.items) == 3  # fewer than any preferred size
    for i in range(10, 19):
        former.submit(call(i), 0.01)
    batch = former.take(0.01, idle=False)
    assert batch is not None and batch.reason == "size" and len(batch.items) == 8


def test_the_latency_model_limits_the_size() -> None:
    former = BatchFormer(FormerSettings(max_batch_size=32, max_queue_delay=10.0))
    for i in range(10):
        former.submit(call(i), 0.0)
    batch = former.take(0.0, idle=False, limit=5)
    assert batch is not None and batch.reason == "size" and len(batch.items) == 5


def test_a_call_leaves_early_enough_to_meet_its_own_deadline() -> None:
    former = BatchFormer(FormerSettings(max_queue_delay=10.0))
    former.submit(call(1, deadline=1.0), 0.0)
    expect = lambda n: 0.25  # noqa: E731
    assert former.take(0.7, idle=False, expect=expect) is None
    assert former.wakeup(expect) == pytest.approx(0.75)
    batch = former.take(0.75, idle=False, expect=expect)
    assert batch is not None and batch.reason == "deadline"


def test_only_calls_with_the_same_key_and_lane_share_a_batch() -> None:
    former = BatchFormer(FormerSettings(max_queue_delay=0.0))
    former.submit(call(1, key="a"), 0.0)
    former.submit(call(2, key="b"), 0.0)
    former.submit(call(3, key="a", lane=1), 0.0)
    former.submit(call(4, key="a"), 0.0)
    batches = []
    while (b := former.take(0.0, idle=False)) is not None:
        batches.append(b)
    assert sorted(sorted(p.id for p in b.items) for b in batches) == [[1, 4], [2], [3]]


def test_the_highest_priority_goes_first_and_aging_lifts_old_calls() -> None:
    former = BatchFormer(FormerSettings(max_batch_size=1, aging=1.0))
    former.submit(call(1, level=2, key="low"), 0.0)
    former.submit(call(2, level=0, key="high", at=1.5), 1.5)
    # At 1.5 s the low call counts 2 - 1.5 = 0.5; the new high one 0.
    batch = former.take(1.5, idle=True)
    assert batch is not None and batch.items[0].id == 2
    former.submit(call(3, level=0, key="high", at=3.0), 3.0)
    # At 3 s the low call has waited 3 s: -1, ahead of the new level-0 call.
    batch = former.take(3.0, idle=True)
    assert batch is not None and batch.items[0].id == 1


def test_a_full_level_refuses_at_once_and_other_levels_still_admit() -> None:
    former = BatchFormer(FormerSettings(levels=(LevelPolicy(max_queue_size=2), LevelPolicy())))
    assert former.submit(call(1, level=0), 0.0) is None
    assert former.submit(call(2, level=0), 0.0) is None
    assert former.submit(call(3, level=0), 0.0) == "queue_full"
    assert former.submit(call(4, level=1), 0.0) is None
    assert former.queued(0) == 2 and former.queued(1) == 1


def test_queue_timeouts_reject_or_delay_as_the_level_says() -> None:
    levels = (
        LevelPolicy(timeout=1.0, on_timeout="reject"),
        LevelPolicy(timeout=1.0, on_timeout="delay"),
        LevelPolicy(),
    )
    former = BatchFormer(FormerSettings(levels=levels, max_queue_delay=10.0, aging=None))
    former.submit(call(1, level=0), 0.0)
    former.submit(call(2, level=1), 0.0)
    former.submit(call(3, level=0, timeout=0.5), 0.0)  # asks for less than its level
    former.submit(call(4, level=0, timeout=5.0), 0.0)  # cannot ask for more
    assert [(p.id, why) for p, why in former.expire(0.5)] == [(3, "queue_timeout")]
    assert sorted((p.id, why) for p, why in former.expire(1.0)) == [
        (1, "queue_timeout"),
        (4, "queue_timeout"),
    ]
    assert former.queued(2) == 1  # call 2 was delayed to the lowest level
    assert former.expire(100.0) == []
    batch = former.take(100.0, idle=True)
    assert batch is not None and [p.id for p in batch.items] == [2]


def test_cancelled_and_expired_calls_never_go_out() -> None:
    former = BatchFormer(FormerSettings(max_queue_delay=10.0))
    former.submit(call(1), 0.0)
    former.submit(call(2, deadline=0.5), 0.0)
    former.submit(call(3), 0.0)
    assert former.cancel(1) and not former.cancel(1)
    batch = former.take(0.6, idle=True)
    assert batch is not None and [p.id for p in batch.items] == [3]
    assert [(p.id, why) for p, why in former.expire(0.6)] == [(2, "deadline")]
    assert len(former) == 0 and former.wakeup() is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"preferred_sizes": (0,)}, "preferred"),
        ({"levels": ()}, "level"),
        ({"max_queue_delay": -1.0}, "max_queue_delay"),
        ({"max_queue_delay": math.nan}, "max_queue_delay"),
        ({"aging": 0.0}, "aging"),
    ],
)
def test_settings_that_cannot_work_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FormerSettings(**kwargs)  # type: ignore[arg-type]


def test_a_call_id_cannot_be_queued_twice() -> None:
    former = BatchFormer()
    former.submit(call(1), 0.0)
    with pytest.raises(ValueError, match="queued already"):
        former.submit(call(1), 0.0)


# -- random runs -----------------------------------------------------------------------


@dataclass
class Run:
    """What happened to every call of a random run."""

    settings: FormerSettings
    fate: dict[int, str] = field(default_factory=dict)
    batches: list[tuple[float, Batch]] = field(default_factory=list)
    calls: dict[int, Pending] = field(default_factory=dict)


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("submit"),
            st.integers(0, 2),  # level
            st.sampled_from(["a", "b"]),  # key
            st.integers(0, 1),  # lane
            st.one_of(st.none(), st.floats(0.0, 0.05)),  # deadline after now
            st.one_of(st.none(), st.floats(0.0, 0.05)),  # caller's queue timeout
        ),
        st.tuples(st.just("cancel"), st.integers(0, 60)),
        st.tuples(st.just("tick"), st.floats(0.0, 0.02)),
        st.tuples(st.just("take"), st.booleans(), st.integers(1, 9)),
    ),
    max_size=60,
)
former_settings = st.builds(
    FormerSettings,
    max_batch_size=st.integers(1, 6),
    preferred_sizes=st.lists(st.integers(1, 6), max_size=2, unique=True).map(
        lambda s: tuple(sorted(s))
    ),
    max_queue_delay=st.floats(0.0, 0.02),
    levels=st.tuples(
        st.builds(LevelPolicy, st.integers(1, 8), st.one_of(st.none(), st.floats(0.001, 0.03))),
        st.builds(
            LevelPolicy,
            st.integers(1, 8),
            st.one_of(st.none(), st.floats(0.001, 0.03)),
            st.sampled_from(["reject", "delay"]),
        ),
        st.builds(LevelPolicy, st.integers(1, 8)),
    ),
    aging=st.one_of(st.none(), st.floats(0.001, 0.05)),
)


def play(cfg: FormerSettings, script: list[tuple[object, ...]]) -> Run:
    run = Run(cfg)
    former = BatchFormer(cfg)
    now = 0.0
    next_id = 0

    def record_expired() -> None:
        for p, why in former.expire(now):
            assert p.id not in run.fate, f"call {p.id} answered twice"
            assert why in ("deadline", "queue_timeout")
            run.fate[p.id] = why

    for op in script:
        if op[0] == "submit":
            _, level, key, lane, deadline, timeout = op
            p = Pending(
                id=next_id,
                level=int(level),  # type: ignore[call-overload]
                enqueued=now,
                key=key,
                lane=int(lane),  # type: ignore[call-overload]
                deadline=math.inf if deadline is None else now + float(deadline),  # type: ignore[arg-type]
                timeout=timeout,  # type: ignore[arg-type]
            )
            run.calls[next_id] = p
            if former.submit(p, now) is not None:
                run.fate[next_id] = "refused"
            next_id += 1
        elif op[0] == "cancel":
            cid = int(op[1])  # type: ignore[call-overload]
            if former.cancel(cid):
                assert cid not in run.fate
                run.fate[cid] = "cancelled"
        elif op[0] == "tick":
            now += float(op[1])  # type: ignore[arg-type]
        else:
            _, idle, limit = op
            record_expired()
            batch = former.take(now, idle=bool(idle), limit=int(limit))  # type: ignore[call-overload]
            if batch is not None:
                run.batches.append((now, batch))
                for p in batch.items:
                    assert p.id not in run.fate, f"call {p.id} answered twice"
                    run.fate[p.id] = "dispatched"
        assert len(former) == sum(former.queued(lv) for lv in range(len(cfg.levels)))
    # Drain: time passes, replicas come idle; every call ends somewhere.
    for _ in range(next_id + 1):
        record_expired()
        batch = former.take(now, idle=True)
        if batch is None:
            break
        run.batches.append((now, batch))
        for p in batch.items:
            assert p.id not in run.fate, f"call {p.id} answered twice"
            run.fate[p.id] = "dispatched"
    now += 10.0
    record_expired()
    assert len(former) == 0 and former.wakeup() is None
    assert set(run.fate) == set(run.calls), "some call was never answered"
    return run


@settings(max_examples=300, deadline=None)
@given(former_settings, ops)
def test_every_call_is_answered_exactly_once_and_batches_keep_the_rules(
    cfg: FormerSettings, script: list[tuple[object, ...]]
) -> None:
    run = play(cfg, script)
    for at, batch in run.batches:
        assert 1 <= len(batch.items) <= cfg.max_batch_size
        assert {(p.key, p.lane) for p in batch.items} == {(batch.key, batch.lane)}
        for p in batch.items:
            assert not p.cancelled or run.fate[p.id] == "dispatched"
            assert p.deadline > at, "a call went out after its deadline"
            assert p.expires > at, "a call went out after its queue timeout"


@settings(max_examples=200, deadline=None)
@given(ops)
def test_within_a_level_and_a_group_calls_leave_in_arrival_order(
    script: list[tuple[object, ...]],
) -> None:
    cfg = FormerSettings(max_batch_size=3, aging=None)
    run = play(cfg, script)
    order = [p for _, b in run.batches for p in b.items]
    seen: dict[tuple[object, int, int], int] = {}
    for p in order:
        group = (p.key, p.lane, p.level)
        assert seen.get(group, -1) < p.id, "a later call of a level overtook an earlier one"
        seen[group] = p.id


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.floats(0.01, 0.5))
def test_with_aging_a_low_call_is_served_while_high_calls_keep_coming(
    high_calls: int, aging: float
) -> None:
    former = BatchFormer(FormerSettings(max_batch_size=1, aging=aging))
    former.submit(Pending(id=0, level=2, enqueued=0.0, key="low"), 0.0)
    now, served_at = 0.0, None
    for i in range(1, 10_000):
        now += aging / 4
        former.submit(Pending(id=i, level=0, enqueued=now, key="high"), now)
        batch = former.take(now, idle=True)
        assert batch is not None
        if batch.items[0].id == 0:
            served_at = now
            break
    assert served_at is not None
    # Two levels behind, it goes once it has waited two agings (and a step of slack).
    assert served_at <= 2 * aging + aging / 4 + 1e-9


def test_a_delayed_call_at_the_lowest_level_waits_on_untimed() -> None:
    lowest = LevelPolicy(timeout=1.0, on_timeout="delay")
    former = BatchFormer(FormerSettings(levels=(LevelPolicy(), lowest), max_queue_delay=10.0))
    former.submit(call(1, level=1), 0.0)
    assert former.expire(1.0) == []
    assert former.queued(1) == 1 and former.wakeup() == pytest.approx(10.0)
