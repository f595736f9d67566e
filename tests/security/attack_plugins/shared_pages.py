"""Not an attack: forked children sharing the worker's memory, well within its limit."""

from __future__ import annotations

import os
import time
from typing import Any

from mcphost.sdk import Plugin

plugin = Plugin("attack_shared_pages", description="Forks children that share its memory")


@plugin.tool
def attack(buffer_mb: int, children: int, seconds: float) -> dict[str, Any]:
    """Fill a buffer, fork ``children`` that keep it (shared) for ``seconds``, wait."""
    buffer = bytearray(buffer_mb * 1024 * 1024)
    buffer[::4096] = b"x" * len(buffer[::4096])
    pids = []
    for _ in range(children):
        pid = os.fork()
        if pid == 0:
            time.sleep(seconds)
            os._exit(0 if buffer[0] == ord("x") else 1)
        pids.append(pid)
    statuses = [os.waitpid(pid, 0)[1] for pid in pids]
    return {"children": len(pids), "statuses": statuses}
