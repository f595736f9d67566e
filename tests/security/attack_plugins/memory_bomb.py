"""Takes memory until it is stopped: in its own process, then in many processes at once.

Each process's address-space limit stops one process; the plugin then spreads the bomb
over forked children, which only a limit on the worker as a whole can stop.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from mcphost.sdk import Plugin

plugin = Plugin("attack_memory_bomb", description="Allocates memory without end")


def _grab(most_mb: int, held: list[bytearray]) -> int:
    """Touch up to ``most_mb`` MiB in 8 MiB chunks into ``held``; MiB got before MemoryError."""
    try:
        while len(held) * 8 < most_mb:
            chunk = bytearray(8 * 1024 * 1024)
            chunk[::4096] = b"x" * len(chunk[::4096])
            held.append(chunk)
    except MemoryError:
        pass
    return len(held) * 8


@plugin.tool
def attack(children: int, most_mb: int) -> dict[str, Any]:
    """Grab memory here, then in ``children`` processes holding theirs all at once."""
    got: dict[str, Any] = {"in_process_mb": _grab(most_mb, [])}
    report_r, report_w = os.pipe()
    release_r, release_w = os.pipe()
    pids = []
    for _ in range(children):
        pid = os.fork()
        if pid == 0:
            os.close(report_r)
            os.close(release_w)
            held: list[bytearray] = []
            os.write(report_w, b"%d %d\n" % (os.getpid(), _grab(most_mb, held)))
            os.close(report_w)
            os.read(release_r, 1)  # hold it until every child has grabbed its share
            os._exit(0)
        pids.append(pid)
    os.close(report_w)
    os.close(release_r)
    reports = b""
    while chunk := os.read(report_r, 4096):
        reports += chunk
    os.close(report_r)
    os.close(release_w)
    ends = []
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        ends.append(signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else status)
    grabbed = dict(tuple(map(int, line.split())) for line in reports.splitlines())
    # Aligned with ``children``: what each grabbed (0: killed before it could say).
    got["children_mb"] = [grabbed.get(pid, 0) for pid in pids]
    got["children"] = ends
    print(got, flush=True)
    return got
