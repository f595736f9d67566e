"""Tries to reach a service listening on the host's loopback (no network was granted)."""

from __future__ import annotations

import socket
from typing import Any

from mcphost.sdk import Plugin

plugin = Plugin("attack_tcp_loopback", description="Connects to a port on the host's loopback")


@plugin.tool
def attack(port: int) -> dict[str, Any]:
    """Connect to ``port`` on 127.0.0.1, ::1 and localhost; the errno of each try."""
    got: dict[str, Any] = {}
    for family, host in (
        (socket.AF_INET, "127.0.0.1"),
        (socket.AF_INET6, "::1"),
        (socket.AF_INET, "localhost"),
    ):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(3)
                s.connect((host, port))
                s.sendall(b"hello from a plugin\n")
                got[host] = "connected"
        except OSError as exc:
            got[host] = exc.errno if exc.errno is not None else repr(exc)
    return got
