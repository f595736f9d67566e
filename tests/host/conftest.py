"""Fixtures for the host suite: plugins written into tmp_path, hosts with a test config."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from support.sources import directory_source

from mcphost.host import Host, HostConfig, PluginSource


def config_for_tests(**overrides: Any) -> HostConfig:
    """A configuration for tests: the rlimits backend (it runs everywhere; the bubblewrap
    suite covers the jail) and unsigned plugins allowed (the security suite covers
    signatures)."""
    return HostConfig(allow_unsigned=True, isolation="rlimits", **overrides)


@pytest.fixture
def host_config() -> Callable[..., HostConfig]:
    """``host_config(**overrides)``: the test configuration with some values changed."""
    return config_for_tests


@pytest.fixture
def write_plugin_source(tmp_path: Path) -> Callable[..., PluginSource]:
    """Write ``<name>.py`` (dedented ``source``) into its own directory; return its source."""
    counter = 0

    def write(name: str, source: str, *, version: str = "1.0.0") -> PluginSource:
        nonlocal counter
        counter += 1
        return directory_source(tmp_path / f"code-{name}-{counter}", name, source, version=version)

    return write


@pytest.fixture
def make_host(home_dir: Path) -> Callable[..., Host]:
    """A Host on the test home serving only what the test names."""

    def make(
        *,
        sources: Iterable[PluginSource] = (),
        plugin_dirs: Iterable[Path] = (),
        hooks: Iterable[object] = (),
        environment: bool = False,
        **config: Any,
    ) -> Host:
        return Host(
            home_dir,
            config=config_for_tests(**config),
            sources=sources,
            plugin_dirs=plugin_dirs,
            environment=environment,
            registry=False,
            hooks=hooks,
        )

    return make
