"""The operator's caps on the limits a plugin asks for, seen from inside real workers.

probekit is signed asking for generous limits and installed with the real CLI into a
home whose ``config.toml`` caps them; the worker then runs under the cap, not under
what the plugin asked for.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from probe_plugin import build_probekit, trusting_home
from support.cli import invoke
from support.wheels import signed

from mcphost.host import Home, Host
from mcphost.sdk.errors import WorkerCrashed
from mcphost.security import PermissionLimits, Permissions, PrivateKey, generate_key

#: What probekit asks for: far more than the caps the tests configure.
ASKED = PermissionLimits(cpu_seconds=600, open_files=4096)


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return generate_key()


@pytest.fixture(scope="module")
def greedy_wheel(tmp_path_factory: pytest.TempPathFactory, key: PrivateKey) -> Path:
    """probekit 1.0.0, signed asking for 600 CPU seconds and 4096 open files."""
    root = tmp_path_factory.mktemp("probekit")
    return signed(build_probekit(root), key, Permissions(limits=ASKED), root / "signed")


def installed(tmp_path: Path, key: PrivateKey, wheel: Path, config: str) -> Home:
    home = trusting_home(tmp_path / "home", key, config)
    res = invoke("plugin", "install", "--yes", str(wheel), home=home)
    assert res.exit_code == 0, res.output
    return home


def test_policy_max_cpu_seconds_stops_a_plugin_that_asked_for_more_cpu_time(
    tmp_path: Path, key: PrivateKey, greedy_wheel: Path, no_leftover_workers: None
) -> None:
    home = installed(
        tmp_path,
        key,
        greedy_wheel,
        """
        call_timeout = 60.0
        [policy]
        max_cpu_seconds = 2
        """,
    )

    async def scenario() -> None:
        async with Host(home, environment=False) as host:
            with pytest.raises(WorkerCrashed) as info:
                await host.call("probekit.spin", {})
            assert "cpu" in info.value.message.lower(), info.value.message
            # The plugin is restarted and serves again under the same cap.
            assert await host.call("probekit.version", {}) == "1.0.0"

    asyncio.run(scenario())


def test_policy_max_open_files_caps_the_files_a_plugin_that_asked_for_more_may_open(
    tmp_path: Path, key: PrivateKey, greedy_wheel: Path, no_leftover_workers: None
) -> None:
    home = installed(
        tmp_path,
        key,
        greedy_wheel,
        """
        [policy]
        max_open_files = 32
        """,
    )

    async def scenario() -> int:
        async with Host(home, environment=False) as host:
            opened: int = await host.call("probekit.open_files", {"n": 1000})
            return opened

    opened = asyncio.run(scenario())
    # Its channel, stdio and the interpreter's own files take a few of the 32.
    assert 0 < opened < 32
