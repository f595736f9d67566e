"""Forks until the system says no, every child holding on, then lets them all go."""

from __future__ import annotations

import os
from typing import Any

from mcphost.sdk import Plugin

plugin = Plugin("attack_fork_bomb", description="Starts processes until it cannot")


@plugin.tool
def attack(most: int) -> dict[str, Any]:
    """Fork up to ``most`` children that wait on a pipe; how many it got and why it stopped."""
    r, w = os.pipe()
    children: list[int] = []
    error: Any = None
    try:
        for _ in range(most):
            pid = os.fork()
            if pid == 0:
                os.close(w)
                os.read(r, 1)
                os._exit(0)
            children.append(pid)
    except OSError as exc:
        error = exc.errno
    finally:
        os.close(w)
        os.close(r)
        for pid in children:
            os.waitpid(pid, 0)
    return {"children": len(children), "error": error}
