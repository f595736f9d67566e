"""The loops mcphost creates itself are uvloop's by default and the standard library's
with MCPHOST_LOOP=asyncio; an app's own loop is never replaced."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import run_mcphost

from mcphost.host import SyncHost
from mcphost.host.cli.main import run_async
from mcphost.sdk import ConfigError


@pytest.fixture
def no_loop_policy() -> Iterator[None]:
    """asyncio's own policy, as an app that chose nothing has (the suite's conftest
    installs one that follows MCPHOST_LOOP, which would hide what mcphost chooses)."""
    suite = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(None)
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(suite)


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def doctor(home: Path, loop: str) -> subprocess.CompletedProcess[str]:
    return run_mcphost(
        "doctor", "--json", extra_env={"MCPHOST_HOME": str(home), "MCPHOST_LOOP": loop}
    )


@pytest.mark.parametrize(("chosen", "module"), [("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_commands_and_sync_host_run_on_the_loop_mcphost_loop_names(
    chosen: str, module: str, home_dir: Path, monkeypatch: pytest.MonkeyPatch, no_loop_policy: None
) -> None:
    monkeypatch.setenv("MCPHOST_LOOP", chosen)
    assert run_async(loop_module()) == module
    # An app's own loop stays the app's: Host runs on whatever loop runs it.
    assert asyncio.run(loop_module()) == "asyncio"
    host = SyncHost(home_dir, environment=False, registry=False)
    try:
        assert type(host._loop).__module__.split(".")[0] == module
    finally:
        host.close()


def test_without_mcphost_loop_uvloop_is_the_default(
    monkeypatch: pytest.MonkeyPatch, no_loop_policy: None
) -> None:
    monkeypatch.delenv("MCPHOST_LOOP", raising=False)
    assert run_async(loop_module()) == "uvloop"


def test_an_unknown_mcphost_loop_is_a_config_error_naming_the_choices(
    monkeypatch: pytest.MonkeyPatch, no_loop_policy: None
) -> None:
    monkeypatch.setenv("MCPHOST_LOOP", "trio")
    coro = loop_module()
    with pytest.raises(ConfigError, match="MCPHOST_LOOP='trio' is not a known event loop"):
        run_async(coro)
    assert coro.cr_frame is None  # closed, not left to warn that it was never awaited


def test_doctor_says_which_loop_runs_and_why(home_dir: Path) -> None:
    default = json.loads(doctor(home_dir, "").stdout)["event_loop"]
    assert default["name"] == "uvloop" and default["error"] is None
    assert "the default" in default["why"]
    chosen = json.loads(doctor(home_dir, "asyncio").stdout)["event_loop"]
    assert chosen["name"] == "asyncio" and chosen["why"] == "MCPHOST_LOOP=asyncio"
    assert chosen["version"] == sys.version.split()[0]
    bad = doctor(home_dir, "nope")
    assert bad.returncode == 0  # doctor still reports, and shows the problem
    assert "is not a known event loop" in json.loads(bad.stdout)["event_loop"]["error"]
