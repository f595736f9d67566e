"""Tries to fill the disk: through /tmp, its scratch directory and its data directory."""

from __future__ import annotations

import os
from typing import Any

from mcphost.sdk import Context, Plugin

plugin = Plugin("attack_fill_disk", description="Writes until the disk is full")

_MIB = b"x" * (1024 * 1024)


def _fill(path: str, most_mb: int) -> dict[str, Any]:
    """Write up to ``most_mb`` MiB into one file; how many MiB went in, and the errno."""
    written = 0
    error: Any = None
    try:
        with open(path, "wb", buffering=0) as f:
            while written < most_mb:
                f.write(_MIB)
                written += 1
    except OSError as exc:
        error = exc.errno
    finally:
        # The jail must stop it; the plugin cleans up so the rest of the suite has room.
        if os.path.exists(path):
            os.unlink(path)
    return {"mb": written, "error": error}


@plugin.tool
def attack(most_mb: int, ctx: Context) -> dict[str, Any]:
    """Fill /tmp, the scratch directory (``$HOME``) and one file in the data directory."""
    return {
        "tmp": _fill("/tmp/fill", most_mb),
        "scratch": _fill(os.path.join(os.environ["HOME"], "fill"), most_mb),
        "data": _fill(str(ctx.data_dir / "fill"), most_mb),
    }
