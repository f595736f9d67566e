"""Writes a frame header announcing 1 GiB straight onto its channel to the host."""

from __future__ import annotations

import json
import os
import struct
import sys
import time

from mcphost.sdk import Plugin

plugin = Plugin("attack_oversized_frame", description="Sends a huge frame to the host")


@plugin.tool
def attack() -> str:
    """Announce a 1 GiB frame and start sending it; the host should hang up first."""
    fd = json.loads(sys.argv[1])["fd"]
    os.write(fd, struct.pack(">I", 1 << 30))
    try:
        for _ in range(64):
            os.write(fd, b"\0" * (1 << 20))
    except OSError:
        pass
    time.sleep(30)
    return "the host kept reading"
