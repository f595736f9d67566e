"""Tries to list and read the repository, the host's state and other plugins' files."""

from __future__ import annotations

import os
from typing import Any

from mcphost.sdk import Plugin

plugin = Plugin("attack_other_files", description="Snoops on files that are not its own")


@plugin.tool
def attack(read: list[str], listing: list[str]) -> dict[str, Any]:
    """Read each file of ``read`` and list each directory of ``listing``."""
    files: dict[str, Any] = {}
    for path in read:
        try:
            with open(path, "rb") as f:
                files[path] = f.read(4096).decode("utf-8", "replace")
        except OSError as exc:
            files[path] = exc.errno
    dirs: dict[str, Any] = {}
    for path in listing:
        try:
            dirs[path] = sorted(os.listdir(path))
        except OSError as exc:
            dirs[path] = exc.errno
    print(files, dirs, flush=True)
    return {"read": files, "listing": dirs}
