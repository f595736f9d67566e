"""Reading the registry: plugins, versions, the active ones, history.

A running host opens the registry read-only and never blocks a change in progress
(SQLite WAL); :meth:`RegistryReader.data_version` makes polling for changes cheap.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import msgspec
from packaging.version import InvalidVersion, Version

from mcphost.sdk.errors import PluginNotFound, RegistryError
from mcphost.sdk.schema import ToolSpec
from mcphost.security.permissions import Permissions

from . import db
from .approvals import Approval
from .damage import check_database_present
from .records import Activation, PluginRecord, VersionRecord
from .store import tree_changes

__all__ = ["HomeLayout", "RegistryReader", "sort_versions"]

_TOOLS = msgspec.json.Decoder(list[ToolSpec])
_APPROVAL = msgspec.json.Decoder(Approval)
_PERMS = msgspec.json.Decoder(Permissions)
_FILES = msgspec.json.Decoder(dict[str, str])
#: The oldest schema a reader reads (version 2 added the dependency hashes).
_READABLE_SCHEMA = 2
#: History actions that changed which version serves a plugin.
_ACTIVATIONS = ("activate", "swap", "rollback")


class HomeLayout(Protocol):
    """The paths the registry uses (``mcphost.host.Home`` has them all)."""

    @property
    def registry_db(self) -> Path: ...
    @property
    def store_dir(self) -> Path: ...
    @property
    def versions_dir(self) -> Path: ...
    @property
    def keys_dir(self) -> Path: ...
    @property
    def audit_log(self) -> Path: ...


def sort_versions(versions: Iterable[str]) -> list[str]:
    """Oldest first, compared as versions (``1.10`` after ``1.9``)."""
    return sorted(versions, key=Version)


class RegistryReader:
    """The registry's records, read from its database; see :class:`Registry` to change them."""

    def __init__(
        self,
        *,
        db_path: Path,
        versions_dir: Path,
        store_dir: Path | None = None,
        readonly: bool = True,
    ) -> None:
        self.db_path = Path(db_path)
        self.versions_dir = Path(versions_dir)
        self.store_dir = (
            Path(store_dir) if store_dir is not None else versions_dir.with_name("store")
        )
        self.readonly = readonly
        # A database lost or emptied beside installed versions is refused before it could
        # be created afresh (see .damage).
        check_database_present(self.db_path, self.versions_dir, self.store_dir)
        self.conn = db.connect(self.db_path, readonly=readonly)

    @property
    def ready(self) -> bool:
        """False for a database another process has not finished creating. A reader
        reads every schema from version 2 on (later ones only add what changes use)."""
        return db.schema_version(self.conn) >= _READABLE_SCHEMA

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> RegistryReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- records -------------------------------------------------------------------
    def generation(self) -> int:
        """Grows with every committed change; what a running host polls."""
        return db.generation(self.conn)

    def data_version(self) -> int:
        """SQLite's cheap counter of commits made by other connections."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def plugins(self) -> list[PluginRecord]:
        """Every plugin with at least one installed version, by name."""
        names = [
            r[0] for r in self.conn.execute("SELECT DISTINCT plugin FROM versions ORDER BY plugin")
        ]
        return [self.plugin(n) for n in names]

    def _plugin_row(self, name: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(
            "SELECT * FROM plugins WHERE name = ?", (name,)
        ).fetchone()
        return row

    def plugin(self, name: str) -> PluginRecord:
        row = self._plugin_row(name)
        versions = sort_versions(
            r[0]
            for r in self.conn.execute("SELECT version FROM versions WHERE plugin = ?", (name,))
        )
        if row is None or not versions:
            raise self._not_installed(name)
        return PluginRecord(
            name=name,
            owner_key=row["owner_key"],
            active_version=row["active_version"],
            versions=versions,
            reset_serial=row["reset_serial"],
        )

    def _not_installed(self, name: str) -> PluginNotFound:
        known = (
            ", ".join(
                p
                for (p,) in self.conn.execute(
                    "SELECT DISTINCT plugin FROM versions ORDER BY plugin"
                )
            )
            or "none"
        )
        return PluginNotFound(
            f"no plugin named {name!r} is in the registry of the home {self.db_path.parent} "
            f"(installed: {known}); install it "
            "with `mcphost plugin install WHEEL`",
            data={"plugin": name},
        )

    def _record(self, row: sqlite3.Row, active: str | None) -> VersionRecord:
        root = self.versions_dir / row["dir"]
        plugin_dir = root / "plugin"
        return VersionRecord(
            plugin=row["plugin"],
            version=row["version"],
            dist_name=row["dist_name"],
            wheel_sha256=row["wheel_sha256"],
            wheel_name=row["wheel_name"],
            entry=row["entry"],
            root=str(root),
            plugin_dir=str(plugin_dir),
            deps_dir=str(root / "deps"),
            dist_info=str(plugin_dir / row["dist_info"]),
            key_id=row["key_id"],
            sequence=row["sequence"],
            permissions=_PERMS.decode(row["permissions"]),
            tools=_TOOLS.decode(row["tools"]) if row["tools"] is not None else None,
            installed_at=row["installed_at"],
            installed_by=row["installed_by"],
            active=row["version"] == active,
            deps_files=_FILES.decode(row["deps_files"]) if row["deps_files"] else None,
            approved=(
                _APPROVAL.decode(row["approved"])
                if "approved" in row.keys() and row["approved"]  # noqa: SIM118 (a Row: values)
                else None
            ),
        )

    def versions(self, name: str) -> list[VersionRecord]:
        """Every installed version of ``name``, oldest first."""
        prow = self._plugin_row(name)
        active = prow["active_version"] if prow is not None else None
        rows = self.conn.execute("SELECT * FROM versions WHERE plugin = ?", (name,)).fetchall()
        if not rows:
            raise self._not_installed(name)
        recs = [self._record(r, active) for r in rows]
        return sorted(recs, key=lambda r: Version(r.version))

    def version(self, name: str, version: str) -> VersionRecord:
        """One installed version; ``1.1`` finds ``1.1.0``. The error lists what is there."""
        recs = self.versions(name)
        for r in recs:
            if r.version == version:
                return r
        try:
            wanted = Version(version)
        except InvalidVersion:
            wanted = None
        for r in recs:
            if wanted is not None and Version(r.version) == wanted:
                return r
        have = ", ".join(r.version for r in recs)
        raise RegistryError(
            f"no version {version} of {name} is installed; installed: {have}",
            data={"plugin": name, "version": version, "installed": [r.version for r in recs]},
        )

    def active(self) -> list[VersionRecord]:
        """The active version of every plugin that has one."""
        rows = self.conn.execute(
            "SELECT v.*, p.active_version AS active FROM versions v JOIN plugins p "
            "ON p.name = v.plugin AND p.active_version = v.version ORDER BY v.plugin"
        ).fetchall()
        return [self._record(r, r["active"]) for r in rows]

    def active_state(self) -> dict[str, tuple[str, int]]:
        """Plugin -> (active version, reset serial): what a running host follows."""
        return {
            r[0]: (r[1], r[2])
            for r in self.conn.execute(
                "SELECT name, active_version, reset_serial FROM plugins "
                "WHERE active_version IS NOT NULL"
            )
        }

    def history(self, name: str) -> list[Activation]:
        """Every install, activation, swap, rollback and removal of ``name``, oldest first."""
        rows = self.conn.execute(
            "SELECT * FROM history WHERE plugin = ? ORDER BY id", (name,)
        ).fetchall()
        return [
            Activation(
                plugin=r["plugin"],
                at=r["at"],
                user=r["user"],
                action=r["action"],
                from_version=r["from_version"],
                to_version=r["to_version"],
                reason=r["reason"],
            )
            for r in rows
        ]

    def rollback_target(self, name: str) -> str:
        """The version that served before the active one, from the history."""
        rec = self.plugin(name)
        current = rec.active_version
        if not [v for v in rec.versions if v != current]:
            raise RegistryError(
                f"{name} has no other version installed to roll back to (installed: "
                f"{', '.join(rec.versions)}); install one with `mcphost plugin install WHEEL`",
                data={"plugin": name},
            )
        for act in reversed(self.history(name)):
            if act.action in _ACTIVATIONS and act.to_version == current:
                if act.from_version is None:
                    break
                if act.from_version not in rec.versions:
                    raise RegistryError(
                        f"{name} {act.from_version}, the version active before {current}, is "
                        f"no longer installed; pick one with `mcphost plugin rollback {name} "
                        f"--to VERSION` (installed: {', '.join(rec.versions)})",
                        data={"plugin": name, "version": act.from_version},
                    )
                return act.from_version
        raise RegistryError(
            f"{name} has no earlier active version to roll back to (active: {current}); "
            f"pick one with `mcphost plugin rollback {name} --to VERSION` "
            f"(installed: {', '.join(rec.versions)})",
            data={"plugin": name},
        )

    def dependency_changes(self, name: str, version: str) -> list[str]:
        """How the installed dependencies of a version differ from what was installed
        (empty: not at all). Dependencies carry no signature of the plugin's publisher,
        so the registry's record of their hashes is what they are checked against."""
        rec = self.version(name, version)
        if rec.deps_files is None:
            return []
        return tree_changes(Path(rec.deps_dir), rec.deps_files)
