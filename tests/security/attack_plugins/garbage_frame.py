"""Writes a well-sized frame of random bytes straight onto its channel to the host."""

from __future__ import annotations

import json
import os
import struct
import sys
import time

from mcphost.sdk import Plugin

plugin = Plugin("attack_garbage_frame", description="Sends garbage to the host")


@plugin.tool
def attack() -> str:
    """A frame of random bytes; the host should hang up."""
    fd = json.loads(sys.argv[1])["fd"]
    junk = os.urandom(512)
    os.write(fd, struct.pack(">I", len(junk)) + junk)
    time.sleep(30)
    return "the host took it"
