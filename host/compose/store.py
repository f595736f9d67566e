"""Installed compositions: versions side by side in SQLite, one active per name.

The file (``compositions.sqlite3`` in the home) sits beside the plugin registry and
works the same way: WAL so a running host reads while the CLI writes, one transaction
per change, a ``generation`` a running host polls to follow changes within a second,
and every change in the audit log.
"""

from __future__ import annotations

import getpass
import json
import sqlite3
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec

from mcphost.sdk.errors import RegistryError
from mcphost.security.audit import AuditLog

from ..home import Home
from .model import Composition, composition_from_data

__all__ = ["CompositionRecord", "CompositionStore", "store_path"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    definition TEXT NOT NULL,
    added_at   REAL NOT NULL,
    added_by   TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS active (
    name        TEXT PRIMARY KEY,
    version     INTEGER NOT NULL,
    previous    INTEGER,
    unavailable TEXT
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('generation', '0');
"""


def store_path(home: Home) -> Path:
    return home.root / "compositions.sqlite3"


class CompositionRecord(msgspec.Struct, kw_only=True):
    """A composition's state: its versions, the active one, and whether it can run."""

    name: str
    active: int
    versions: list[int]
    previous: int | None
    unavailable: str | None
    description: str


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class CompositionStore:
    """Read and change the compositions of one home (a context manager)."""

    def __init__(self, home: Home, *, create: bool = False) -> None:
        self.path = store_path(home)
        self.audit = AuditLog(home.audit_log)
        if not create and not self.path.exists():
            self.conn: sqlite3.Connection | None = None
            return
        try:
            self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=10)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot open the compositions in {self.path}: {exc}") from None

    def __enter__(self) -> CompositionStore:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    # -- reading ---------------------------------------------------------------------
    def generation(self) -> int:
        if self.conn is None:
            return 0
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        return [] if self.conn is None else self.conn.execute(sql, args).fetchall()

    def records(self) -> list[CompositionRecord]:
        out = []
        for name, active, previous, unavailable in self._rows(
            "SELECT name, version, previous, unavailable FROM active ORDER BY name"
        ):
            versions = [
                r[0]
                for r in self._rows(
                    "SELECT version FROM versions WHERE name = ? ORDER BY version", (name,)
                )
            ]
            comp = self.definition(name, active)
            out.append(
                CompositionRecord(
                    name=name,
                    active=active,
                    versions=versions,
                    previous=previous,
                    unavailable=unavailable,
                    description=comp.description,
                )
            )
        return out

    def record(self, name: str) -> CompositionRecord:
        for rec in self.records():
            if rec.name == name:
                return rec
        known = ", ".join(r.name for r in self.records()) or "none"
        raise RegistryError(
            f"no composition named {name!r} is installed (installed: {known}); add one with "
            "`mcphost compose add FILE`",
            data={"composition": name},
        )

    def definition(self, name: str, version: int | None = None) -> Composition:
        if version is None:
            version = self.record(name).active
        rows = self._rows(
            "SELECT definition FROM versions WHERE name = ? AND version = ?", (name, version)
        )
        if not rows:
            raise RegistryError(f"composition {name} has no version {version}")
        return composition_from_data(json.loads(rows[0][0]), f"composition {name} v{version}")

    def active(self) -> list[tuple[Composition, str, str | None]]:
        """(definition, version, unavailable reason) of every installed composition."""
        return [
            (self.definition(r.name, r.active), str(r.active), r.unavailable)
            for r in self.records()
        ]

    # -- changing --------------------------------------------------------------------
    def _change(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        assert self.conn is not None
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            for sql, args in statements:
                self.conn.execute(sql, args)
            self.conn.execute(
                "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'"
            )
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise RegistryError(f"cannot change the compositions in {self.path}: {exc}") from None

    def add(self, comp: Composition) -> int:
        """Install ``comp`` as a new version and make it active; returns the version."""
        rows = self._rows("SELECT MAX(version) FROM versions WHERE name = ?", (comp.name,))
        version = (rows[0][0] or 0) + 1
        current = self._rows("SELECT version FROM active WHERE name = ?", (comp.name,))
        previous = current[0][0] if current else None
        self._change(
            [
                (
                    "INSERT INTO versions VALUES (?, ?, ?, ?, ?)",
                    (comp.name, version, json.dumps(comp.to_data()), time.time(), _who()),
                ),
                (
                    "INSERT OR REPLACE INTO active VALUES (?, ?, ?, NULL)",
                    (comp.name, version, previous),
                ),
            ]
        )
        self.audit.append("composition.add", detail=f"{comp.name} version {version}")
        return version

    def rollback(self, name: str, to: int | None = None) -> tuple[int, int]:
        """Make the version active before (or ``to``) active again; (from, to)."""
        rec = self.record(name)
        target = to if to is not None else rec.previous
        if target is None:
            raise RegistryError(f"composition {name} has no earlier version to roll back to")
        if target not in rec.versions:
            raise RegistryError(
                f"composition {name} has no version {target} (it has "
                f"{', '.join(map(str, rec.versions))})"
            )
        if target == rec.active:
            raise RegistryError(f"composition {name} version {target} is active already")
        self._change(
            [
                (
                    "UPDATE active SET version = ?, previous = ?, unavailable = NULL "
                    "WHERE name = ?",
                    (target, rec.active, name),
                )
            ]
        )
        self.audit.append("composition.rollback", detail=f"{name} version {rec.active} -> {target}")
        return rec.active, target

    def remove(self, name: str) -> list[int]:
        rec = self.record(name)
        self._change(
            [
                ("DELETE FROM versions WHERE name = ?", (name,)),
                ("DELETE FROM active WHERE name = ?", (name,)),
            ]
        )
        self.audit.append("composition.remove", detail=f"{name} versions {rec.versions}")
        return rec.versions

    def mark_unavailable(self, name: str, reason: str) -> None:
        self.record(name)
        self._change([("UPDATE active SET unavailable = ? WHERE name = ?", (reason, name))])
        self.audit.append("composition.unavailable", detail=f"{name}: {reason}")
