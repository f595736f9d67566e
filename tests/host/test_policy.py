"""The operator's policy: what a plugin asks for, the host's defaults, and the caps."""

from __future__ import annotations

import pytest

from mcphost.host.config import HostConfig
from mcphost.host.policy import PolicyDenied, enforce_policy
from mcphost.host.sources import PluginSource
from mcphost.sandbox.isolation import Grants, Limits


def source(limits: Limits | None = None, grants: Grants | None = None) -> PluginSource:
    return PluginSource(
        name="acme",
        version="1.0",
        entry="acme:plugin",
        paths=[],
        origin="registry",
        limits=limits,
        grants=grants or Grants(),
    )


def config(**raw: object) -> HostConfig:
    return HostConfig.model_validate(raw)


def test_limits_a_plugin_leaves_out_are_the_hosts_defaults_not_the_policy_caps() -> None:
    cfg = config(limits={"cpu_seconds": 30, "open_files": 100, "processes": 8})
    asked = Limits(
        memory_mb=256, cpu_seconds=None, open_files=None, processes=None, file_size_mb=None
    )
    got = enforce_policy(source(asked), cfg).limits
    assert got is not None
    assert got.memory_mb == 256
    assert (got.cpu_seconds, got.open_files, got.processes) == (30, 100, 8)
    assert got.file_size_mb == cfg.limits.file_size_mb


def test_limits_a_plugin_asks_for_are_capped_by_the_policy() -> None:
    cfg = config(policy={"max_memory_mb": 512, "max_processes": 4})
    got = enforce_policy(source(Limits(memory_mb=8192, processes=100)), cfg).limits
    assert got is not None
    assert (got.memory_mb, got.processes) == (512, 4)


def test_a_plugin_that_asks_for_no_limits_runs_with_the_defaults() -> None:
    cfg = config()
    assert enforce_policy(source(None), cfg).limits is None


def test_a_denied_grant_is_refused_with_the_setting_to_change() -> None:
    cfg = config(policy={"network": False})
    with pytest.raises(PolicyDenied, match=r"policy\.network = false") as info:
        enforce_policy(source(grants=Grants(network=["api.example.com:443"])), cfg)
    assert "api.example.com:443" in str(info.value)
    assert info.value.code == "policy_denied"
