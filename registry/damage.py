"""Telling a lost or replaced registry database from an empty registry.

Installed versions and wheels only ever exist after the database that records them was
created, so a database that is missing or empty next to them, or one recording no
version while they remain, is not the registry's database: it was lost, truncated or
replaced. Then nothing is changed (and nothing deleted) until ``mcphost registry
rebuild`` has rebuilt the records from the store's signed wheels.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mcphost.sdk.errors import RegistryDamaged

from .db import REBUILD_ADVICE
from .store import BUILDING, TRASH

__all__ = ["check_database_present", "check_records", "installed_content"]


def installed_content(versions_dir: Path, store_dir: Path) -> tuple[int, int]:
    """How many version directories and wheels are on disk (scratch places left out)."""
    wheels = (
        sum(1 for f in store_dir.iterdir() if f.suffix == ".whl" and not f.name.startswith("."))
        if store_dir.is_dir()
        else 0
    )
    dirs = 0
    if versions_dir.is_dir():
        for plugin_dir in versions_dir.iterdir():
            if plugin_dir.name not in (BUILDING, TRASH) and plugin_dir.is_dir():
                dirs += sum(1 for _ in plugin_dir.iterdir())
    return dirs, wheels


def _damaged(what: str, db_path: Path, dirs: int, wheels: int) -> RegistryDamaged:
    return RegistryDamaged(
        f"the registry database {db_path} {what}, but {dirs} installed version "
        f"director{'y' if dirs == 1 else 'ies'} and {wheels} wheel{'' if wheels == 1 else 's'} "
        f"remain under {db_path.parent}; {REBUILD_ADVICE}",
        data={"reason": "damaged", "path": str(db_path), "dirs": dirs, "wheels": wheels},
    )


def check_database_present(db_path: Path, versions_dir: Path, store_dir: Path) -> bool:
    """Raise :class:`RegistryDamaged` when the database is missing or empty while
    versions or wheels remain; returns whether the database file exists."""
    try:
        size: int | None = db_path.stat().st_size
    except FileNotFoundError:
        size = None
    if size:
        return True
    dirs, wheels = installed_content(versions_dir, store_dir)
    if dirs or wheels:
        raise _damaged("is missing" if size is None else "is empty", db_path, dirs, wheels)
    return size is not None


def _records(conn: sqlite3.Connection) -> int:
    """Versions recorded plus changes in progress (a reader may see a schema before the
    journal's)."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    sql = "SELECT (SELECT COUNT(*) FROM versions)"
    if "pending" in tables:
        sql += " + (SELECT COUNT(*) FROM pending)"
    return int(conn.execute(sql).fetchone()[0])


def check_records(
    conn: sqlite3.Connection, db_path: Path, versions_dir: Path, store_dir: Path
) -> None:
    """Raise :class:`RegistryDamaged` when the database records no version and no
    change in progress while versions or wheels remain (a writer calls it under the
    change lock, after the sweep)."""
    if _records(conn):
        return
    dirs, wheels = installed_content(versions_dir, store_dir)
    # Asked again after looking at the files: an install that journalled its files
    # meanwhile is not damage (a reader does not hold the change lock).
    if (dirs or wheels) and not _records(conn):
        raise _damaged(
            "records no installed version (it is not the database they were installed with)",
            db_path,
            dirs,
            wheels,
        )
