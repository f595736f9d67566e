"""The audit log: one JSON line per security-relevant action, appended and synced.

Each line is written with a single ``write`` on a file opened with ``O_APPEND`` and then
fsynced, so concurrent writers never interleave within a line and a line that was
reported written survives a crash.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from mcphost.sdk.errors import ConfigError

__all__ = ["AuditLog"]

_ENCODER = msgspec.json.Encoder()


class AuditLog:
    """An append-only JSON-lines file of actions: keys, trust, revocations, refusals."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    def append(
        self,
        action: str,
        *,
        plugin: str | None = None,
        version: str | None = None,
        key_id: str | None = None,
        hashes: Mapping[str, str] | None = None,
        outcome: str = "ok",
        detail: str | None = None,
        actor: str | None = None,
    ) -> dict[str, Any]:
        """Append one entry and return it; fields left ``None`` are left out."""
        now = time.time()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            "unix": round(now, 3),
            "action": action,
            "outcome": outcome,
            "actor": actor if actor is not None else _default_actor(),
        }
        for name, value in (
            ("plugin", plugin),
            ("version", version),
            ("key_id", key_id),
            ("detail", detail),
        ):
            if value is not None:
                entry[name] = value
        if hashes is not None:
            entry["hashes"] = dict(hashes)
        line = _ENCODER.encode(entry) + b"\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"cannot open the audit log {self.path}: {exc.strerror or exc}; "
                "check the permissions of the mcphost home"
            ) from exc
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise ConfigError(f"short write to the audit log {self.path}; is the disk full?")
            os.fsync(fd)
        except OSError as exc:
            raise ConfigError(
                f"cannot write the audit log {self.path}: {exc.strerror or exc}; free some "
                "space on its disk or check the permissions of the mcphost home"
            ) from None
        finally:
            os.close(fd)
        return entry

    def read(self) -> list[dict[str, Any]]:
        """Every entry, oldest first. A damaged line becomes an ``audit.unreadable`` entry."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ConfigError(
                f"cannot read the audit log {self.path}: {exc.strerror or exc}"
            ) from exc
        out: list[dict[str, Any]] = []
        for number, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = msgspec.json.decode(line)
            except msgspec.DecodeError:
                entry = None
            if not isinstance(entry, dict):
                entry = {
                    "action": "audit.unreadable",
                    "outcome": "error",
                    "detail": f"line {number} of {self.path} is not a JSON object",
                }
            out.append(entry)
        return out


def _default_actor() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())
