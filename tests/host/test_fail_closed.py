"""A host that cannot verify plugins starts none of them, and says why."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mcphost.host import Host, HostConfig, hookimpl
from mcphost.sdk import VerificationError


class StartRecorder:
    """Remembers every plugin whose worker started."""

    def __init__(self) -> None:
        self.started: list[str] = []

    @hookimpl
    def mcphost_plugin_started(self, plugin: str, version: str, pid: int) -> None:
        self.started.append(plugin)


@pytest.mark.parametrize(
    ("broken", "registry"),
    [
        # The verification module itself, and the security code it is built on.
        ("mcphost.host.verification", False),
        ("mcphost.security.verify", False),
        # The registry link stops the workers of a revoked key's plugins.
        ("mcphost.host.registry_link", True),
    ],
)
def test_a_host_whose_verification_cannot_be_loaded_starts_no_plugin_and_says_why(
    home_dir: Path,
    plugin_dirs: dict[str, Path],
    host_config: Callable[..., HostConfig],
    monkeypatch: pytest.MonkeyPatch,
    broken: str,
    registry: bool,
    no_leftover_workers: None,
) -> None:
    # A module set to None in sys.modules cannot be imported: as with a broken install.
    # What imports it is imported afresh, so that the failure reaches the host.
    for name in ("mcphost.host.verification", "mcphost.host.registry_link"):
        if name in sys.modules:
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, broken, None)
    recorder = StartRecorder()
    host = Host(
        home_dir,
        config=host_config(),
        plugin_dirs=[plugin_dirs["textkit"]],
        environment=False,
        registry=registry,
        hooks=[recorder],
    )

    async def scenario() -> None:
        async with host:
            await host.call("textkit.upper", {"text": "unverified"})

    with pytest.raises(VerificationError) as info:
        asyncio.run(scenario())
    assert info.value.code == "verification_failed"
    assert info.value.data["reason"] == "verification_unavailable"
    message = str(info.value)
    assert message.startswith("plugin verification cannot be set up (ModuleNotFoundError: ")
    assert broken in message and "no plugin is started; reinstall mcphost" in message
    assert recorder.started == []
