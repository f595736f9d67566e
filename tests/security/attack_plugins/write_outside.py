"""Tries to write outside its data directory: host state, other plugins, its own code."""

from __future__ import annotations

import os
from typing import Any

from mcphost.sdk import Context, Plugin

plugin = Plugin("attack_write_outside", description="Writes where it was not allowed to")


def _write(path: str) -> Any:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        return exc.errno
    try:
        os.write(fd, b"\nwritten by attack_write_outside\n")
    except OSError as exc:
        return exc.errno
    finally:
        os.close(fd)
    return "written"


@plugin.tool
def attack(paths: list[str], ctx: Context) -> dict[str, Any]:
    """Append a line to each path (and to this module's own file); say what happened."""
    got = {path: _write(path) for path in [*paths, __file__]}
    got["own data dir"] = _write(str(ctx.data_dir / "allowed.txt"))
    return got
