"""The scaling decision on its own (host/pool/scaling.py): readings in, replicas out,
with time passed in; and the ``[plugins.NAME]`` settings that make a policy."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcphost.host.config import PluginSettings, load_config
from mcphost.host.pool.scaling import Load, Scaler, ScalingPolicy
from mcphost.sdk.errors import ConfigError


def scaler(**kw: float) -> Scaler:
    policy = {"min_replicas": 1, "max_replicas": 4, "target_load": 2.0, "scale_down_after": 5.0}
    policy.update(kw)
    return Scaler(ScalingPolicy(**policy))  # type: ignore[arg-type]


def test_load_within_the_target_keeps_the_count() -> None:
    s = scaler()
    assert s.decide(Load(0.0, 1, inflight=2)).replicas == 1
    assert s.decide(Load(0.1, 2, inflight=4)).replicas == 2


def test_calls_in_flight_and_queued_grow_the_pool_to_what_they_need() -> None:
    s = scaler()
    d = s.decide(Load(0.0, 1, inflight=3, queued=2))
    assert d.replicas == 3  # 5 calls at 2 a replica
    assert "5 calls in flight or queued over 1 replicas" in d.reason


def test_growth_stops_at_max_replicas() -> None:
    s = scaler(max_replicas=3)
    assert s.decide(Load(0.0, 1, inflight=50)).replicas == 3
    assert s.decide(Load(0.1, 3, inflight=50)).replicas == 3


def test_the_pool_shrinks_one_replica_at_a_time_after_the_idle_period() -> None:
    s = scaler(scale_down_after=5.0)
    assert s.decide(Load(0.0, 3, inflight=0)).replicas == 3  # the wait starts
    assert s.decide(Load(4.9, 3, inflight=0)).replicas == 3
    d = s.decide(Load(5.0, 3, inflight=0))
    assert d.replicas == 2 and "fit in 2 replicas for 5 s" in d.reason
    assert s.decide(Load(9.9, 2, inflight=0)).replicas == 2  # a new wait for the next
    assert s.decide(Load(10.0, 2, inflight=0)).replicas == 1
    assert s.decide(Load(100.0, 1, inflight=0)).replicas == 1  # never below min


def test_a_busy_moment_restarts_the_idle_wait() -> None:
    s = scaler(scale_down_after=5.0)
    s.decide(Load(0.0, 2, inflight=0))
    s.decide(Load(3.0, 2, inflight=4))  # needs both replicas again
    assert s.decide(Load(6.0, 2, inflight=0)).replicas == 2
    assert s.decide(Load(11.0, 2, inflight=0)).replicas == 1


def test_bounds_that_change_apply_at_the_next_reading() -> None:
    s = scaler(min_replicas=1, max_replicas=4)
    s.policy = ScalingPolicy(min_replicas=3, max_replicas=5)
    d = s.decide(Load(0.0, 1, inflight=0))
    assert d.replicas == 3 and "min_replicas is 3" in d.reason
    s.policy = ScalingPolicy(min_replicas=1, max_replicas=2)
    d = s.decide(Load(0.1, 3, inflight=0))
    assert d.replicas == 2 and "max_replicas is 2" in d.reason


def test_latency_over_its_target_grows_by_one_then_waits_for_the_cooldown() -> None:
    # 4 calls in 2 replicas, 2 finishing a second: 2 s in the pool (Little's law).
    s = scaler(target_load=10.0, target_latency=0.5, cooldown=1.0, max_replicas=5)
    assert s.decide(Load(0.0, 2, inflight=4)).replicas == 2  # no measure yet
    d = s.decide(Load(1.0, 2, inflight=4, finished=2))
    assert s.latency == pytest.approx(2.0)
    assert d.replicas == 3 and "target_latency 500 ms" in d.reason
    assert s.decide(Load(1.5, 3, inflight=4, finished=1)).replicas == 3  # cooldown
    assert s.decide(Load(2.5, 3, inflight=4, finished=2)).replicas == 4


def test_slow_calls_that_do_not_share_replicas_do_not_grow_the_pool() -> None:
    s = scaler(target_load=10.0, target_latency=0.01)
    s.decide(Load(0.0, 2, inflight=2))
    assert s.decide(Load(1.0, 2, inflight=2, finished=1)).replicas == 2


def test_a_policy_needs_ordered_bounds() -> None:
    with pytest.raises(ValueError, match="min_replicas"):
        ScalingPolicy(min_replicas=3, max_replicas=2)
    assert not ScalingPolicy(min_replicas=2, max_replicas=2).scales
    assert ScalingPolicy(min_replicas=1, max_replicas=2).scales


@given(
    st.integers(1, 4),
    st.integers(0, 6),
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40), st.floats(0, 3)), max_size=40),
)
def test_the_count_stays_within_the_bounds(low: int, extra: int, steps: list) -> None:
    s = Scaler(ScalingPolicy(min_replicas=low, max_replicas=low + extra, scale_down_after=1.0))
    n, now = low, 0.0
    for inflight, queued, dt in steps:
        now += dt
        n = s.decide(Load(now, n, inflight=inflight, queued=queued)).replicas
        assert low <= n <= low + extra


# -- the settings ----------------------------------------------------------------------


def config_error(tmp_path: Path, table: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text("[plugins.pooled]\n" + table)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.message


def test_a_fixed_count_and_bounds_together_are_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, "replicas = 2\nmax_replicas = 4\n")
    assert "plugins.pooled" in message
    assert "replicas (a fixed count) and max_replicas (a scaling pool)" in message


def test_scaling_targets_with_a_fixed_count_are_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, "replicas = 2\nscale_down_after = 5\n")
    assert "scale_down_after only apply to a scaling pool" in message


def test_bounds_out_of_order_are_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, "min_replicas = 3\nmax_replicas = 2\n")
    assert "min_replicas (3) is above max_replicas (2)" in message


def test_the_settings_make_the_policy(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "[plugins.a]\nreplicas = 3\n"
        "[plugins.b]\nmax_replicas = 4\nscale_down_after = 2.5\ntarget_latency = 0.2\n"
        "[plugins.c]\nmin_replicas = 2\n"
    )
    cfg = load_config(path)
    assert cfg.plugins["a"].policy() == ScalingPolicy(min_replicas=3, max_replicas=3)
    b = cfg.plugins["b"].policy()
    assert (b.min_replicas, b.max_replicas, b.scale_down_after, b.target_latency) == (
        1,
        4,
        2.5,
        0.2,
    )
    assert cfg.plugins["c"].policy() == ScalingPolicy(min_replicas=2, max_replicas=2)
    assert PluginSettings().policy() == ScalingPolicy()  # one worker
    # The configuration as it runs reads back as it was (the reload dumps and reads it).
    assert type(cfg).model_validate(cfg.model_dump()) == cfg


def test_config_set_writes_a_plugins_replica_setting_and_refuses_a_contradiction(
    home_dir: Path,
) -> None:
    from support.cli import run_mcphost

    done = run_mcphost("config", "set", "plugins.mathkit.max_replicas", "4", home=home_dir)
    assert done.returncode == 0, done.stderr
    assert "plugins.mathkit.max_replicas = 4  (running hosts apply it within a second)" in (
        done.stdout
    )
    refused = run_mcphost("config", "set", "plugins.mathkit.replicas", "2", home=home_dir)
    assert refused.returncode == 2
    assert "invalid value for plugins.mathkit.replicas" in refused.stderr
    assert "contradict each other" in refused.stderr
    unknown = run_mcphost("config", "set", "plugins.mathkit.nope", "2", home=home_dir)
    assert unknown.returncode == 2 and "plugins.NAME.{replicas,min_replicas" in unknown.stderr
    config = load_config(home_dir / "config.toml")
    assert config.plugins["mathkit"].policy() == ScalingPolicy(min_replicas=1, max_replicas=4)
