"""A raw stdio MCP client: newline-delimited JSON-RPC written and read as bytes, for
what the official client cannot send (malformed input, oversized lines) and for reading
a server's replies one at a time with a bound."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from typing import Any

__all__ = ["RawStdio"]


class RawStdio:
    """A server (``mcphost serve`` over stdio) started from ``argv``, driven with bytes."""

    def __init__(
        self, argv: list[str], *, stderr: int | None = subprocess.DEVNULL, **popen: Any
    ) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, **popen
        )
        self._buf = b""

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send_json(self, obj: Any) -> None:
        self.send(json.dumps(obj).encode() + b"\n")

    def send_lines(self, *lines: bytes) -> None:
        """Write each line (one JSON-RPC message) with its newline, all in one write."""
        self.send(b"".join(line + b"\n" for line in lines))

    def read(self, timeout: float = 20.0) -> dict[str, Any]:
        """The next message the server writes, waiting at most ``timeout`` seconds."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("mcphost serve wrote nothing in time")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise EOFError("mcphost serve closed its stdout")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        result: dict[str, Any] = json.loads(line)
        return result

    def read_until_answered(self, ids: set[int], timeout: float = 60.0) -> list[dict[str, Any]]:
        """Every message up to the answers to ``ids`` (each read waits at most
        ``timeout`` seconds)."""
        ids = set(ids)
        seen: list[dict[str, Any]] = []
        while ids:
            msg = self.read(timeout)
            seen.append(msg)
            ids.discard(msg.get("id"))
        return seen

    def request(
        self, id: int, method: str, params: dict[str, Any] | None = None, timeout: float = 20.0
    ) -> dict[str, Any]:
        """Send a request and return the reply with its id (notifications before it are
        skipped)."""
        self.send_json({"jsonrpc": "2.0", "id": id, "method": method, "params": params or {}})
        while True:
            msg = self.read(timeout)
            if msg.get("id") == id:
                return msg

    def close(self, timeout: float = 20.0) -> int:
        """Close the server's stdin and wait (at most ``timeout`` seconds) for it to exit;
        its exit status. A server still running then is killed and reaped."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """End the server if it still runs, and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
