"""Crash recovery: the change lock, the journal of changes in progress, and the sweep.

Every change to the registry holds one exclusive file lock and sweeps before it starts.
The sweep deletes only what it positively knows to be left over: anything in
``versions/.building`` and ``versions/.trash`` (the registry's own scratch places), the
store's own temporary files, and the version directories and wheels named by a journal
row of a change that never finished (``pending``), unless a version record claims them.
A file merely unknown to the database is never deleted: a database that was lost,
emptied or replaced must not cost the installed versions (see :mod:`.damage`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from . import db
from .records import RecoveryReport
from .store import BUILDING, TRASH, discard_tree, wheel_path

__all__ = ["change_lock", "journal", "settle", "sweep"]

log = logging.getLogger("mcphost.registry")


@contextmanager
def change_lock(db_path: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold the registry's change lock; with ``wait`` false, yield False at once when
    another process holds it."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(
            db_path.with_name(db_path.name + ".lock"),
            os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
            0o644,
        )
    except OSError as exc:
        raise db.database_error(exc, db_path) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def journal(conn: sqlite3.Connection, dir: str | None, wheel_sha256: str | None) -> int:
    """Record, inside the caller's transaction, that a change is about to make or delete
    the version directory ``dir`` (relative to ``versions/``) and the wheel; returns the
    row's id for :func:`settle`."""
    cur = conn.execute(
        "INSERT INTO pending (dir, wheel_sha256, started_at) VALUES (?, ?, ?)",
        (dir, wheel_sha256, time.time()),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def _safe_dir(rel: str) -> bool:
    parts = PurePosixPath(rel).parts
    return len(parts) == 2 and not rel.startswith("/") and not {"..", "."} & set(parts)


def settle(
    conn: sqlite3.Connection,
    versions_dir: Path,
    store_dir: Path,
    ids: list[int] | None = None,
) -> tuple[list[str], list[str]]:
    """Finish the journalled changes ``ids`` (all of them when ``None``): delete the
    directories and wheels they name that no version record claims, then their rows.
    Returns the directories and wheels deleted."""
    rows = conn.execute("SELECT id, dir, wheel_sha256 FROM pending ORDER BY id").fetchall()
    rows = [r for r in rows if ids is None or r["id"] in ids]
    if not rows:
        return [], []
    known_dirs = {r[0] for r in conn.execute("SELECT dir FROM versions")}
    known_shas = {r[0] for r in conn.execute("SELECT wheel_sha256 FROM versions")}
    removed_dirs: list[str] = []
    removed_wheels: list[str] = []
    for r in rows:
        rel, sha = r["dir"], r["wheel_sha256"]
        if rel and rel not in known_dirs and _safe_dir(rel):
            target = versions_dir / rel
            if target.exists() or target.is_symlink():
                discard_tree(target)
                removed_dirs.append(str(target))
            parent = target.parent
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        if sha and sha not in known_shas and all(c in "0123456789abcdef" for c in sha):
            wheel = wheel_path(store_dir, sha)
            if wheel.exists():
                wheel.unlink()
                removed_wheels.append(str(wheel))
    with db.transaction(conn):
        conn.executemany("DELETE FROM pending WHERE id = ?", [(r["id"],) for r in rows])
    return removed_dirs, removed_wheels


def sweep(conn: sqlite3.Connection, versions_dir: Path, store_dir: Path) -> RecoveryReport:
    """Delete what interrupted changes left (see the module's docstring); call only
    while holding :func:`change_lock`."""
    removed_dirs: list[str] = []
    for special in (BUILDING, TRASH):
        d = versions_dir / special
        if d.is_dir():
            for leftover in d.iterdir():
                discard_tree(leftover)
                removed_dirs.append(str(leftover))
    dirs, removed_wheels = settle(conn, versions_dir, store_dir)
    removed_dirs += dirs
    if store_dir.is_dir():
        # store_wheel writes ".<sha256>.<random>.tmp" and renames it: never a wheel.
        for f in store_dir.iterdir():
            if f.name.startswith(".") and f.name.endswith(".tmp"):
                f.unlink(missing_ok=True)
                removed_wheels.append(str(f))
    if removed_dirs or removed_wheels:
        log.warning(
            "registry recovery removed %d leftover directories and %d wheels",
            len(removed_dirs),
            len(removed_wheels),
        )
    return RecoveryReport(removed_dirs=removed_dirs, removed_wheels=removed_wheels)
