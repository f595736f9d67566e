"""The registry's SQLite database: schema, migrations, and one transaction per change.

WAL mode lets a running host read while the CLI writes. Every change runs inside
``BEGIN IMMEDIATE`` ... ``COMMIT`` and bumps the ``generation`` counter, which is what a
running host polls to notice a swap made by another process.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from mcphost.sdk.errors import RegistryDamaged, RegistryError

__all__ = [
    "REBUILD_ADVICE",
    "SCHEMA_VERSION",
    "bump_generation",
    "connect",
    "database_error",
    "file_error",
    "generation",
    "schema_version",
    "transaction",
]

#: Bumped whenever the schema changes; :func:`connect` migrates older databases forward.
SCHEMA_VERSION = 4

#: What every message about a lost or damaged database tells the operator to do.
REBUILD_ADVICE = (
    "nothing was changed. Run `mcphost registry rebuild` to rebuild the records from the "
    "signed wheels in the store"
)

_SCHEMA_V1 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE plugins (
    name           TEXT PRIMARY KEY,
    -- The key that first installed the plugin, NULL while only unsigned wheels were seen.
    owner_key      TEXT,
    active_version TEXT,
    -- Highest manifest sequence ever installed (rollback protection).
    max_sequence   INTEGER NOT NULL DEFAULT 0,
    -- Bumped by `mcphost plugin reset`, running hosts clear the plugin's failed state.
    reset_serial   INTEGER NOT NULL DEFAULT 0,
    created_at     REAL NOT NULL
);
CREATE TABLE versions (
    plugin       TEXT NOT NULL REFERENCES plugins(name),
    version      TEXT NOT NULL,
    dist_name    TEXT NOT NULL,
    wheel_sha256 TEXT NOT NULL,
    wheel_name   TEXT NOT NULL,
    entry        TEXT NOT NULL,
    -- Directory under versions_dir, relative.
    dir          TEXT NOT NULL UNIQUE,
    dist_info    TEXT NOT NULL,
    key_id       TEXT,
    sequence     INTEGER,
    permissions  TEXT NOT NULL,
    tools        TEXT,
    installed_at REAL NOT NULL,
    installed_by TEXT NOT NULL,
    PRIMARY KEY (plugin, version)
);
CREATE TABLE history (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    plugin       TEXT NOT NULL,
    at           REAL NOT NULL,
    user         TEXT NOT NULL,
    action       TEXT NOT NULL,
    from_version TEXT,
    to_version   TEXT,
    reason       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX history_plugin ON history (plugin, id);
INSERT INTO meta (key, value) VALUES ('generation', '0');
"""

#: Version 2: the sha256 of every dependency file, checked before each start.
_SCHEMA_V2 = """
ALTER TABLE versions ADD COLUMN deps_files TEXT;
"""

#: Version 3: the journal of changes in progress. A change records here, before it
#: writes a file, which version directory and wheel it is about to make (or, for a
#: removal, to delete), and clears the row when it is done; the sweep after a crash
#: deletes only what these rows name and no version record claims.
_SCHEMA_V3 = """
CREATE TABLE IF NOT EXISTS pending (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    dir          TEXT,
    wheel_sha256 TEXT,
    started_at   REAL NOT NULL
);
"""

#: Version 4: what the operator approved of each version (its tools' names,
#: descriptions and schemas, as JSON: ``approvals.Approval``); NULL until approved.
_SCHEMA_V4 = """
ALTER TABLE versions ADD COLUMN approved TEXT;
"""

_MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3, 4: _SCHEMA_V4}

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def database_error(exc: Exception, path: Path) -> RegistryError:
    """A failure of the registry database (or of a file beside it) as one clear error:
    the disk is full, the home is read-only, the file is damaged, or anything else."""
    text = str(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)
    lower = text.lower()
    err = exc.errno if isinstance(exc, OSError) else None
    if err in _FULL or "disk is full" in lower or ("disk i/o error" in lower and _full(path)):
        return RegistryError(
            f"the disk holding the mcphost home {path.parent} is full ({text}); nothing was "
            "changed. Free some space there and run the command again",
            data={"reason": "disk_full", "path": str(path)},
        )
    cannot_open = "unable to open" in lower and not os.access(path.parent, os.W_OK)
    if err in _READ_ONLY or "readonly" in lower or "read-only" in lower or cannot_open:
        return RegistryError(
            f"the mcphost home {path.parent} is read-only here ({text}): commands that only "
            "read (plugin list, plugin info, tools, call, serve) work; run changes where the "
            "home is writable",
            data={"reason": "read_only", "path": str(path)},
        )
    if "malformed" in lower or "not a database" in lower or "corrupt" in lower:
        return RegistryDamaged(
            f"the registry database {path} is damaged ({text}); {REBUILD_ADVICE}",
            data={"reason": "damaged", "path": str(path)},
        )
    return RegistryError(
        f"cannot use the registry database {path}: {text}; check the file and its directory",
        data={"path": str(path)},
    )


def file_error(exc: OSError, db_path: Path) -> RegistryError:
    """A failure to write a file of the registry (a wheel, a version directory) during a
    change, as one clear error; ``db_path`` locates the home."""
    error = database_error(exc, db_path)
    if error.data.get("reason") in ("disk_full", "read_only"):
        return error
    return RegistryError(
        f"cannot write {exc.filename or 'a file of the registry'}: {exc.strerror or exc}; "
        f"nothing was installed. Check the disk and the permissions of {db_path.parent}",
        data={"path": str(exc.filename or "")},
    )


def _full(path: Path) -> bool:
    """Whether the file system holding ``path`` has (nearly) no space left: SQLite
    reports a shared-memory file it cannot grow as an I/O error."""
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 1024 * 1024


class _Cursor(sqlite3.Cursor):
    """Rows are read lazily: a damaged page can surface while fetching, not only in
    ``execute``, so fetching translates errors too."""

    def _fail(self, exc: sqlite3.Error) -> RegistryError:
        conn = self.connection
        return database_error(exc, conn.path if isinstance(conn, _Connection) else Path("?"))

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._fail(exc) from None

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._fail(exc) from None

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.DatabaseError as exc:
            raise self._fail(exc) from None


class _Connection(sqlite3.Connection):
    """A connection whose every failure is a :class:`RegistryError` saying what to do."""

    path: Path = Path("?")

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return self.cursor(_Cursor).execute(sql, parameters)
        except sqlite3.DatabaseError as exc:
            raise database_error(exc, self.path) from None

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        try:
            return self.cursor(_Cursor).executemany(sql, parameters)
        except sqlite3.DatabaseError as exc:
            raise database_error(exc, self.path) from None


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (and create or migrate, unless ``readonly``) the registry database."""
    try:
        if readonly:
            conn = _connect_readonly(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(path),
                isolation_level=None,
                timeout=30.0,
                check_same_thread=False,
                factory=_Connection,
            )
        conn.path = path
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        if not readonly:
            _set_wal(conn)
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            _migrate(conn, path)
        else:
            _check_version(conn, path)
    except (sqlite3.DatabaseError, OSError) as exc:
        raise database_error(exc, path) from None
    return conn


def _connect_readonly(path: Path) -> _Connection:
    """Open for reading. A WAL database needs its ``-shm`` file, which a read-only home
    cannot create: there, unless a writer elsewhere has the file open (its ``-shm``
    exists), it is read as a snapshot (``immutable``)."""
    uri = f"file:{path}?mode=ro"
    if not os.access(path.parent, os.W_OK) and not Path(f"{path}-shm").exists():
        uri += "&immutable=1"
    return sqlite3.connect(
        uri,
        uri=True,
        isolation_level=None,
        timeout=10.0,
        check_same_thread=False,
        factory=_Connection,
    )


def _set_wal(conn: sqlite3.Connection, timeout: float = 30.0) -> None:
    """Switch to WAL (a persistent setting). Two processes creating the database at
    once can get SQLITE_BUSY here without the busy handler, so retry within a bound."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except (sqlite3.OperationalError, RegistryError) as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version of an open database (0: not created yet)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _check_version(conn: sqlite3.Connection, path: Path) -> int:
    have = schema_version(conn)
    if have > SCHEMA_VERSION:
        raise RegistryError(
            f"the registry database {path} has schema version {have}, newer than this "
            f"mcphost understands ({SCHEMA_VERSION}); upgrade mcphost"
        )
    return have


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    if _check_version(conn, path) == SCHEMA_VERSION:
        return
    with transaction(conn):
        # Read again under the write lock: another process may have migrated meanwhile.
        have = _check_version(conn, path)
        for version in range(have + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[version].split(";"):
                if statement.strip() and not _added_already(conn, statement):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")


def _added_already(conn: sqlite3.Connection, statement: str) -> bool:
    """Whether ``statement`` adds a column the table has already (SQLite has no ``ADD
    COLUMN IF NOT EXISTS``): each migration can run again over what it made."""
    words = statement.split()
    if [w.upper() for w in words[:2]] != ["ALTER", "TABLE"] or len(words) < 6:
        return False
    if [w.upper() for w in words[3:5]] != ["ADD", "COLUMN"]:
        return False
    table, column = words[2], words[5]
    return any(r[1] == column for r in conn.execute(f"PRAGMA table_info({table})"))


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; any exception rolls everything back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        # SQLite may have rolled back already (a full disk does); the first error is
        # the one that says what happened.
        if conn.in_transaction:
            with suppress(RegistryError):
                conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with suppress(RegistryError):
                conn.execute("ROLLBACK")
        raise


def bump_generation(conn: sqlite3.Connection) -> int:
    """Count one more change (inside the caller's transaction); returns the new value."""
    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
    return generation(conn)


def generation(conn: sqlite3.Connection) -> int:
    """How many changes the registry has seen; grows with every committed change."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
    return int(row[0]) if row is not None else 0
