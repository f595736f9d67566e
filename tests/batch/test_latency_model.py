"""The batcher's service-time model: it learns ``a + b·n``, follows a replica that slows
down, and picks the largest batch within a latency target."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcphost.host.batch import LatencyModel


def test_an_unseen_tool_may_use_the_whole_cap() -> None:
    model = LatencyModel(max_size=16)
    assert model.observed == 0
    assert model.predict(10) == 0.0
    assert model.size_for(0.001) == 16
    assert model.size_for(None) == 16


def test_it_learns_the_fixed_and_per_item_costs() -> None:
    model = LatencyModel(max_size=64)
    for n in (1, 4, 8, 16, 2, 32, 5) * 5:
        model.observe(n, 0.002 + 0.0005 * n)
    a, b = model.coefficients()
    assert a == pytest.approx(0.002, rel=1e-6)
    assert b == pytest.approx(0.0005, rel=1e-6)
    # 2 ms + 0.5 ms * n <= 10 ms: n <= 16.
    assert model.size_for(0.010) == 16
    assert model.size_for(0.0001) == 1  # never less than one


def test_one_size_seen_counts_all_of_its_time_per_item() -> None:
    model = LatencyModel(max_size=64)
    model.observe(4, 0.004)
    assert model.coefficients() == pytest.approx((0.0, 0.001))
    assert model.size_for(0.006) == 6


def test_a_replica_that_slows_down_is_followed() -> None:
    model = LatencyModel(max_size=64, alpha=0.3)
    for n in (1, 8) * 10:
        model.observe(n, 0.001 * n)
    fast = model.size_for(0.016)
    for n in (1, 8) * 20:
        model.observe(n, 0.004 * n)
    assert model.size_for(0.016) < fast
    assert model.size_for(0.016) == 4


def test_a_missed_target_halves_the_cap_and_kept_targets_grow_it_back() -> None:
    model = LatencyModel(max_size=32)
    model.observe(32, 0.050, target=0.010)
    assert model.cap == 16
    model.observe(16, 0.020, target=0.010)
    assert model.cap == 8
    for _ in range(5):
        model.observe(8, 0.005, target=0.010)
    assert model.cap == 13
    for _ in range(100):
        model.observe(8, 0.005, target=0.010)
    assert model.cap == 32  # never above the maximum
    for _ in range(10):
        model.observe(1, 1.0, target=0.010)
    assert model.cap == 1  # never below one


def test_noise_that_would_make_bigger_batches_cheaper_is_ignored() -> None:
    model = LatencyModel(max_size=8)
    for n, t in ((1, 0.010), (8, 0.002)) * 5:
        model.observe(n, t)
    a, b = model.coefficients()
    assert b == 0.0 and a > 0


def test_nonsense_observations_are_skipped() -> None:
    model = LatencyModel(max_size=8)
    model.observe(0, 0.1)
    model.observe(2, math.nan)
    model.observe(2, -1.0)
    assert model.observed == 0


@pytest.mark.parametrize(("max_size", "alpha"), [(0, 0.2), (4, 0.0), (4, 1.5)])
def test_bad_parameters_are_refused(max_size: int, alpha: float) -> None:
    with pytest.raises(ValueError):
        LatencyModel(max_size=max_size, alpha=alpha)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 64), st.floats(0.0, 1.0, allow_nan=False)),
        min_size=1,
        max_size=40,
    ),
    st.floats(0.0, 2.0),
)
def test_the_size_chosen_is_always_within_one_and_the_cap(
    seen: list[tuple[int, float]], budget: float
) -> None:
    model = LatencyModel(max_size=64)
    for n, t in seen:
        model.observe(n, t, target=0.5)
    size = model.size_for(budget)
    assert 1 <= size <= model.cap <= 64
    a, b = model.coefficients()
    assert a >= 0 and b >= 0
    if size > 1:
        assert model.predict(size) <= budget + 1e-9
