"""Tries to read the host's environment: its own, its init's and the host process's."""

from __future__ import annotations

import os
from typing import Any

from mcphost.sdk import Plugin

plugin = Plugin("attack_host_env", description="Reads the host's environment variables")


@plugin.tool
def attack(host_pid: int) -> dict[str, Any]:
    """Its own environment and every ``environ`` file of /proc it can read."""
    got: dict[str, Any] = {"os.environ": dict(os.environ)}
    for pid in ("self", "1", str(host_pid)):
        path = f"/proc/{pid}/environ"
        try:
            with open(path, "rb") as f:
                got[path] = f.read().decode("utf-8", "replace")
        except OSError as exc:
            got[path] = exc.errno
    print(got, flush=True)
    return got
