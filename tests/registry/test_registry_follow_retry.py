"""A registry change that a running host cannot apply is logged, kept in the host's
state, and tried again with backoff until it applies."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_mcphost
from support.waiting import wait_until

from mcphost.host import Home, Host, HostEvent
from mcphost.registry import Registry


def test_a_swap_that_fails_to_apply_is_logged_shown_in_the_host_and_retried_until_it_applies(
    home: Home,
    wheels: dict[str, Path],
    caplog: pytest.LogCaptureFixture,
    no_leftover_workers: None,
) -> None:
    for args in (
        ["plugin", "install", str(wheels["1.0"]), "--yes"],
        ["plugin", "install", str(wheels["1.1"]), "--yes", "--no-activate"],
    ):
        proc = run_mcphost(*args, home=home)
        assert proc.returncode == 0, proc.stderr
    (code,) = home.versions_dir.joinpath("textkit").glob("1.1.0-*/**/mcphost_textkit/__init__.py")
    original = code.read_bytes()

    async def scenario() -> tuple[Any, Any, str]:
        async with Host(home, environment=False) as host:
            swapped = asyncio.Event()

            def on(event: HostEvent) -> None:
                if event.kind == "plugin_swapped":
                    swapped.set()

            host.add_listener(on)
            assert await host.call("textkit.echo", {"text": "a"}) == "a"
            # 1.1.0's installed code changes after the registry checked it: the host's
            # verification refuses to start it.
            code.write_bytes(original + b"# changed\n")
            try:
                with Registry.open(home) as reg:
                    reg.activate("textkit", "1.1.0")
                await wait_until(lambda: host.registry_error is not None, 20, "a failure recorded")
                failure = host.registry_error
                assert not swapped.is_set()
                assert await host.call("textkit.echo", {"text": "b"}) == "b"  # 1.0 serves on
            finally:
                code.write_bytes(original)
            # Nothing changes in the registry any more: the host tries again by itself.
            await asyncio.wait_for(swapped.wait(), 30)
            return failure, host.registry_error, await host.call("textkit.echo", {"text": "c"})

    with caplog.at_level(logging.INFO, logger="mcphost.registry"):
        failure, after, answer = asyncio.run(scenario())
    assert failure.plugin == "textkit" and failure.version == "1.1.0"
    assert "plugin textkit 1.1.0" in failure.reason and "__init__.py" in failure.reason
    assert failure.attempts >= 1 and 0 < failure.retry_in <= 30
    logged = [r.getMessage() for r in caplog.records]
    assert any(
        "could not apply a registry change: switch textkit to 1.1.0 (try 1, next in" in m
        and "__init__.py" in m
        for m in logged
    ), logged
    assert after is None
    assert answer == "c [1.1]"
