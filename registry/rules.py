"""The rules a wheel must pass to be installed, beyond its signature.

- A plugin name belongs to the key that first installed it; a wheel signed by another
  key (or unsigned) is refused unless the operator allows a key change.
- The same name and version with different content is refused: a version's content
  never changes.
- A manifest sequence lower than one already installed for the plugin is refused, so
  an old signed release cannot be slipped back in (a rollback attack).
"""

from __future__ import annotations

import sqlite3

from packaging.version import Version

from mcphost.sdk.errors import RegistryError

from .wheels import CheckedWheel

__all__ = ["check_install"]


def _refuse(w: CheckedWheel, message: str, reason: str) -> None:
    raise RegistryError(message, data={"plugin": w.plugin, "version": w.version, "reason": reason})


def check_install(conn: sqlite3.Connection, w: CheckedWheel, allow_key_change: bool) -> bool:
    """Apply the rules; True when this exact wheel is installed already. A refusal is a
    :class:`RegistryError` whose ``data["reason"]`` says which rule."""
    row = conn.execute("SELECT * FROM plugins WHERE name = ?", (w.plugin,)).fetchone()
    existing = conn.execute(
        "SELECT version, wheel_sha256 FROM versions WHERE plugin = ?", (w.plugin,)
    ).fetchall()
    for r in existing:
        if Version(r["version"]) == Version(w.version):
            if r["wheel_sha256"] == w.sha256:
                return True
            _refuse(
                w,
                f"{w.plugin} {r['version']} is installed already from a different "
                f"wheel (sha256 {r['wheel_sha256'][:12]}, this one {w.sha256[:12]}); a "
                "version's content never changes: publish it under a new version, or "
                f"remove the installed one first (`mcphost plugin remove {w.plugin} "
                f"{r['version']}`)",
                "version_conflict",
            )
    if row is None:
        return False
    owner = row["owner_key"]
    if owner is not None and owner != w.key_id and not allow_key_change:
        signer = f"key {w.key_id}" if w.key_id else "no key (unsigned)"
        _refuse(
            w,
            f"plugin name {w.plugin} belongs to key {owner}, but {w.source} is signed "
            f"by {signer}; if the publisher really changed keys, install with "
            "--allow-key-change",
            "key_change",
        )
    if w.sequence is not None and owner == w.key_id and w.sequence < row["max_sequence"]:
        _refuse(
            w,
            f"{w.label} has manifest sequence {w.sequence}, older than sequence "
            f"{row['max_sequence']} already installed for {w.plugin}: refusing a "
            "rollback attack. To go back to an installed version use "
            f"`mcphost plugin rollback {w.plugin} --to VERSION`",
            "rollback",
        )
    return False
