"""Granted one TCP port on the host's network, tries to reach another one."""

from __future__ import annotations

import socket
from typing import Any

from mcphost.sdk import Plugin

plugin = Plugin("attack_tcp_ungranted_port", description="Connects to a port it was not granted")


@plugin.tool
def attack(port: int) -> dict[str, Any]:
    """Connect to ``port`` on 127.0.0.1; "connected" or the errno."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.sendall(b"hello from a plugin\n")
            return {"127.0.0.1": "connected"}
    except OSError as exc:
        return {"127.0.0.1": exc.errno if exc.errno is not None else repr(exc)}
