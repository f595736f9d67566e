"""The rows a change writes: history, the active version, an install's records.

Each function runs inside the caller's ``BEGIN IMMEDIATE`` transaction; the
:class:`~.registry.Registry` decides the order of files and transactions.
"""

from __future__ import annotations

import getpass
import os
import sqlite3
import time
from pathlib import Path

import msgspec

from .crash import crash_point
from .wheels import CheckedWheel

__all__ = ["current_user", "log_change", "record_install", "set_active"]


def current_user() -> str:
    """The operating-system user, as the history records who made a change."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def log_change(
    conn: sqlite3.Connection,
    plugin: str,
    action: str,
    from_v: str | None,
    to_v: str | None,
    reason: str,
) -> None:
    """One row of a plugin's history."""
    conn.execute(
        "INSERT INTO history (plugin, at, user, action, from_version, to_version, reason) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (plugin, time.time(), current_user(), action, from_v, to_v, reason),
    )


def set_active(
    conn: sqlite3.Connection,
    name: str,
    old: str | None,
    new: str | None,
    action: str,
    reason: str,
) -> None:
    """Make ``new`` the version serving ``name`` (``None``: none), with its history row."""
    conn.execute("UPDATE plugins SET active_version = ? WHERE name = ?", (new, name))
    log_change(conn, name, action, old, new, reason)


def record_install(
    conn: sqlite3.Connection,
    w: CheckedWheel,
    dest: str,
    deps_files: dict[str, str],
    *,
    reason: str,
    pending: int,
    activate: bool,
) -> tuple[bool, str | None]:
    """An install's records: the plugin (owner key, highest sequence), the version, the
    end of its journal row and (with ``activate``) the switch to it. Returns
    (activated, the version active before)."""
    now = time.time()
    row = conn.execute("SELECT * FROM plugins WHERE name = ?", (w.plugin,)).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO plugins (name, owner_key, max_sequence, created_at) VALUES (?, ?, 0, ?)",
            (w.plugin, w.key_id, now),
        )
    elif w.key_id is not None and row["owner_key"] != w.key_id:
        # Unowned so far (only unsigned versions), or an allowed key change.
        conn.execute("UPDATE plugins SET owner_key = ? WHERE name = ?", (w.key_id, w.plugin))
    if w.sequence is not None:
        conn.execute(
            "UPDATE plugins SET max_sequence = MAX(max_sequence, ?) WHERE name = ?",
            (w.sequence, w.plugin),
        )
    conn.execute(
        "INSERT INTO versions (plugin, version, dist_name, wheel_sha256, wheel_name, entry, "
        "dir, dist_info, key_id, sequence, permissions, tools, installed_at, installed_by, "
        "deps_files) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)",
        (
            w.plugin,
            w.version,
            w.dist_name,
            w.sha256,
            Path(w.source).name,
            w.entry,
            dest,
            w.dist_info,
            w.key_id,
            w.sequence,
            msgspec.json.encode(w.permissions).decode(),
            now,
            current_user(),
            msgspec.json.encode(deps_files).decode(),
        ),
    )
    conn.execute("DELETE FROM pending WHERE id = ?", (pending,))
    log_change(conn, w.plugin, "install", None, w.version, reason or "installed")
    previous: str | None = row["active_version"] if row is not None else None
    activated = activate and previous != w.version
    if activated:
        set_active(
            conn, w.plugin, previous, w.version, "activate", reason or "activated on install"
        )
    crash_point("install_before_commit")
    return activated, previous
