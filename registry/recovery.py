"""Crash recovery: the change lock, and the sweep of what an interrupted change left.

Every change to the registry holds one exclusive file lock, and sweeps before it
starts: a crashed install leaves at most a directory in ``.building``, or a renamed
version directory no record refers to (the transaction never committed); a crashed
removal leaves a directory in ``.trash``, or a directory whose record is gone.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .records import RecoveryReport
from .store import BUILDING, TRASH, discard_tree

__all__ = ["change_lock", "sweep"]

log = logging.getLogger("mcphost.registry")


@contextmanager
def change_lock(db_path: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold the registry's change lock; with ``wait`` false, yield False at once when
    another process holds it."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(
        db_path.with_name(db_path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
    )
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def sweep(conn: sqlite3.Connection, versions_dir: Path, store_dir: Path) -> RecoveryReport:
    """Delete version directories and wheels no record refers to, and everything in
    ``.building``/``.trash``; call only while holding :func:`change_lock`."""
    removed_dirs: list[str] = []
    removed_wheels: list[str] = []
    known_dirs = {r[0] for r in conn.execute("SELECT dir FROM versions")}
    known_shas = {r[0] for r in conn.execute("SELECT wheel_sha256 FROM versions")}
    for special in (BUILDING, TRASH):
        d = versions_dir / special
        if d.is_dir():
            for leftover in d.iterdir():
                discard_tree(leftover)
                removed_dirs.append(str(leftover))
    if versions_dir.is_dir():
        for plugin_dir in versions_dir.iterdir():
            if plugin_dir.name in (BUILDING, TRASH) or not plugin_dir.is_dir():
                continue
            for vdir in plugin_dir.iterdir():
                if f"{plugin_dir.name}/{vdir.name}" not in known_dirs:
                    discard_tree(vdir)
                    removed_dirs.append(str(vdir))
            if not any(plugin_dir.iterdir()):
                plugin_dir.rmdir()
    if store_dir.is_dir():
        for f in store_dir.iterdir():
            if f.name.startswith(".") or (f.suffix == ".whl" and f.stem not in known_shas):
                f.unlink(missing_ok=True)
                removed_wheels.append(str(f))
    if removed_dirs or removed_wheels:
        log.warning(
            "registry recovery removed %d leftover directories and %d wheels",
            len(removed_dirs),
            len(removed_wheels),
        )
    return RecoveryReport(removed_dirs=removed_dirs, removed_wheels=removed_wheels)
