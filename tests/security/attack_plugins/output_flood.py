"""Floods its stdout and stderr: huge lines without newlines, and many short lines."""

from __future__ import annotations

import os
from typing import Any

from mcphost.sdk import Plugin

plugin = Plugin("attack_output_flood", description="Prints without end")


@plugin.tool
def attack(long_mb: int, short_lines: int) -> dict[str, Any]:
    """Write ``long_mb`` MiB without a newline to each stream, then many short lines."""
    block = b"A" * (1024 * 1024)
    for fd in (1, 2):
        for _ in range(long_mb):
            os.write(fd, block)
        os.write(fd, b"\n")
    line = b"flood line\n" * 1000
    for _ in range(short_lines // 1000):
        os.write(1, line)
        os.write(2, line)
    return {"long_mb": long_mb, "short_lines": short_lines}
