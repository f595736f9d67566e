"""Fixtures for the composition suite: a real host serving the example plugins, and a
helper that runs a scenario against it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from compose_helpers import config_for_tests

from mcphost.host import Host

T = TypeVar("T")

Scenario = Callable[..., Any]


@pytest.fixture
def make_host(home_dir: Path, plugin_dirs: dict[str, Path]) -> Callable[..., Host]:
    """``make_host(**config)``: a host on the test home serving textkit and mathkit."""

    def make(**config: Any) -> Host:
        return Host(
            home_dir,
            config=config_for_tests(**config),
            plugin_dirs=[plugin_dirs["textkit"], plugin_dirs["mathkit"]],
            environment=False,
            registry=False,
        )

    return make


@pytest.fixture
def with_host(make_host: Callable[..., Host], no_leftover_workers: None) -> Callable[..., Any]:
    """``with_host(scenario, **config)``: run ``await scenario(host)`` on a started host."""

    def run(scenario: Callable[[Host], Awaitable[T]], **config: Any) -> T:
        async def go() -> T:
            async with make_host(**config) as host:
                return await scenario(host)

        return asyncio.run(go())

    return run
