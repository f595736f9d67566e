"""Looks around /proc for other processes: the host, other workers, the test runner."""

from __future__ import annotations

import os
from typing import Any

from mcphost.sdk import Plugin

plugin = Plugin("attack_proc_view", description="Lists the processes it can see")


@plugin.tool
def attack(host_pid: int) -> dict[str, Any]:
    """Every pid in /proc with its command line; whether the host's pid is there."""
    procs: dict[str, str] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    procs[name] = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError as exc:
                procs[name] = f"errno {exc.errno}"
    return {
        "procs": procs,
        "me": os.getpid(),
        "host visible": os.path.exists(f"/proc/{host_pid}"),
    }
