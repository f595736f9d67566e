"""Tries to use file descriptors the host might have left open for it."""

from __future__ import annotations

import os
import stat
from typing import Any

from mcphost.sdk import Plugin

plugin = Plugin("attack_inherited_fd", description="Reads fds it was never given")


@plugin.tool
def attack(fd: int) -> dict[str, Any]:
    """fstat and read ``fd``; and list every fd it holds, with what it points to."""
    got: dict[str, Any] = {}
    try:
        st = os.fstat(fd)
        got["fstat"] = stat.filemode(st.st_mode)
        os.lseek(fd, 0, os.SEEK_SET)
        got["read"] = os.read(fd, 4096).decode("utf-8", "replace")
    except OSError as exc:
        got["error"] = exc.errno
    held = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            held[name] = os.readlink(f"/proc/self/fd/{name}")
        except OSError as exc:
            held[name] = f"errno {exc.errno}"
    got["held"] = held
    return got
