"""Burns CPU in a chain of forked processes: each one gets a fresh CPU-time rlimit."""

from __future__ import annotations

import os

from mcphost.sdk import Plugin

plugin = Plugin("attack_cpu_spin_forked", description="Burns CPU in process after process")


def _spin() -> None:
    n = 0
    while True:
        n += 1


@plugin.tool
def attack(at_once: int) -> str:
    """Keep ``at_once`` spinning children alive, replacing each one its rlimit ends."""
    running: set[int] = set()
    while True:
        while len(running) < at_once:
            pid = os.fork()
            if pid == 0:
                _spin()
            running.add(pid)
        pid, _ = os.wait()
        running.discard(pid)
