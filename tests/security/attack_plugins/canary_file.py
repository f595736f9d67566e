"""Tries to read a canary file in the host user's home: by its path and through ``~``."""

from __future__ import annotations

import os
from typing import Any

from mcphost.sdk import Plugin

plugin = Plugin("attack_canary_file", description="Reads the host user's private files")


@plugin.tool
def attack(paths: list[str]) -> dict[str, Any]:
    """Read each path (and ``~/.ssh/id_canary``); the content, or the errno."""
    got: dict[str, Any] = {}
    for path in [*paths, os.path.expanduser("~/.ssh/id_canary"), "/root/.ssh/id_canary"]:
        try:
            with open(path, "rb") as f:
                got[path] = f.read(4096).decode("utf-8", "replace")
        except OSError as exc:
            got[path] = exc.errno
    print(got, flush=True)
    return got
