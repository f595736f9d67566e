"""Named points where a test can kill the registry's process, to prove crash safety.

Setting ``MCPHOST_TEST_CRASH_AT=<point>`` makes the process SIGKILL itself when it
reaches that point; nothing else reads the variable.
"""

from __future__ import annotations

import os
import signal

__all__ = ["CRASH_ENV", "CRASH_POINTS", "crash_point"]

CRASH_ENV = "MCPHOST_TEST_CRASH_AT"

#: Every named point, in the order an install (or a repair), swap or removal passes them.
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
)


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL if the test asked for a crash at ``name``."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
