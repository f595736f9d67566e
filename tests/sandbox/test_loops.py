"""The choice of event loop: uvloop where installed, the stdlib loop on request."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from mcphost.sandbox import loops
from mcphost.sdk import ConfigError


def test_uvloop_is_the_loop_when_installed_and_nothing_else_was_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MCPHOST_LOOP", raising=False)
    assert loops.loop_name() == "uvloop"
    loop = loops.loop_factory()()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_mcphost_loop_asyncio_chooses_the_stdlib_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPHOST_LOOP", "asyncio")
    assert loops.loop_name() == "asyncio"
    loop = loops.new_event_loop()
    try:
        assert not isinstance(loop, uvloop.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()


def test_a_loop_name_mcphost_does_not_know_is_refused_with_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MCPHOST_LOOP", "trio")
    with pytest.raises(ConfigError) as info:
        loops.loop_name()
    assert "MCPHOST_LOOP='trio'" in info.value.message
    assert "uvloop, asyncio" in info.value.message


def test_the_loop_runs_a_coroutine_with_either_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    for name in loops.LOOPS:
        monkeypatch.setenv("MCPHOST_LOOP", name)
        with asyncio.Runner(loop_factory=loops.loop_factory()) as runner:
            assert runner.run(answer()) == 42


async def test_an_async_test_runs_on_a_loop_of_the_kind_mcphost_runs() -> None:
    # tests/conftest.py runs every ``async def test_...`` so (tests/support/README.md).
    loop = asyncio.get_running_loop()
    assert type(loop).__module__.split(".")[0] == loops.loop_name()
    assert loop.is_running() and not loop.is_closed()
