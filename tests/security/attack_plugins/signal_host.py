"""Tries to signal the host process, the jail's init and every process it can reach."""

from __future__ import annotations

import os
import signal
from typing import Any

from mcphost.sdk import Plugin

plugin = Plugin("attack_signal_host", description="Sends signals to the host")


@plugin.tool
def attack(host_pid: int) -> dict[str, Any]:
    """SIGKILL the host's pid, SIGSTOP and SIGKILL the jail's init; the errno of each."""
    got: dict[str, Any] = {}
    for name, pid, sig in (
        ("host SIGSTOP", host_pid, signal.SIGSTOP),
        ("host SIGKILL", host_pid, signal.SIGKILL),
        ("host group SIGKILL", -host_pid, signal.SIGKILL),
        ("init SIGKILL", 1, signal.SIGKILL),
        ("parent SIGKILL", os.getppid(), signal.SIGKILL),
    ):
        try:
            os.kill(pid, sig)
            got[name] = "sent"
        except OSError as exc:
            got[name] = exc.errno
    return got
