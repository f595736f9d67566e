"""Tries to reach the host's unix sockets: an abstract one and one in the host's files."""

from __future__ import annotations

import socket
from typing import Any

from mcphost.sdk import Plugin

plugin = Plugin("attack_unix_socket", description="Connects to the host's local sockets")


@plugin.tool
def attack(abstract: str, path: str) -> dict[str, Any]:
    """Connect to the abstract socket ``abstract`` and the socket file ``path``."""
    got: dict[str, Any] = {}
    for name, address in (("abstract", "\0" + abstract), ("path", path)):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(3)
                s.connect(address)
                s.sendall(b"hello from a plugin\n")
                got[name] = "connected"
        except OSError as exc:
            got[name] = exc.errno if exc.errno is not None else repr(exc)
    return got
