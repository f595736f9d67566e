"""Named points where a test can kill the registry's process, to prove crash safety.

A point is armed only by code running in the process (:func:`arm`): no environment
variable, file or option reaches it, so an installed mcphost never kills itself. The
test suite arms a point in a subprocess through its own launcher
(``tests/registry/crash_launcher.py``), which then runs the CLI.
"""

from __future__ import annotations

import os
import signal

__all__ = ["CRASH_POINTS", "arm", "crash_point"]

#: Every named point, in the order an install (or a repair), swap, removal or rebuild
#: passes them.
CRASH_POINTS = (
    "install_stored",
    "build_unpacked",
    "build_synced",
    "repair_swapped",
    "install_renamed",
    "install_before_commit",
    "install_committed",
    "swap_before_commit",
    "swap_committed",
    "remove_before_commit",
    "remove_committed",
    "remove_trashed",
    "rebuild_written",
    "rebuild_set_aside",
)

_armed: str | None = None


def arm(point: str | None) -> None:
    """Make this process SIGKILL itself when it reaches ``point`` (``None`` disarms)."""
    global _armed
    if point is not None and point not in CRASH_POINTS:
        raise ValueError(f"unknown crash point {point!r}; one of {', '.join(CRASH_POINTS)}")
    _armed = point


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL if a test armed the point ``name``."""
    if _armed == name:
        os.kill(os.getpid(), signal.SIGKILL)
