"""The registry: which plugin versions are installed, which one is active, and why.

Every change follows the same order, so a crash at any point leaves the old state or
the new one: files are built aside and renamed into place, then one SQLite transaction
records the change; removal commits first and deletes files after. A sweep under the
registry's lock deletes whatever an interrupted process left behind.
"""

from __future__ import annotations

import fcntl
import getpass
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import msgspec
from packaging.version import InvalidVersion, Version

from mcphost.sdk.errors import PluginNotFound, RegistryError, VerificationError
from mcphost.sdk.schema import ToolSpec
from mcphost.security.audit import AuditLog
from mcphost.security.permissions import Permissions
from mcphost.security.truststore import TrustStore

from . import db
from .crash import crash_point
from .records import (
    Activation,
    InstallResult,
    PluginRecord,
    RecoveryReport,
    VersionRecord,
)
from .store import (
    BUILDING,
    TRASH,
    build_version_dir,
    discard_tree,
    move_to_trash,
    store_wheel,
    tree_changes,
    wheel_path,
)
from .wheels import CheckedWheel, check_wheel

__all__ = ["HomeLayout", "Registry", "sort_versions"]

log = logging.getLogger("mcphost.registry")

Progress = Callable[[str], None]
_MAX_WHEEL = 2 * 1024 * 1024 * 1024
_TOOLS = msgspec.json.Decoder(list[ToolSpec])
_PERMS = msgspec.json.Decoder(Permissions)
_FILES = msgspec.json.Decoder(dict[str, str])
#: History actions that changed which version serves a plugin.
_ACTIVATIONS = ("install", "activate", "swap", "rollback")


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


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


class Registry:
    """Installed plugin versions under one home. Open with :meth:`open`; close when done.

    Reading never blocks a running host; changes are serialised by a file lock and each
    is one SQLite transaction. The registry never starts a plugin.
    """

    def __init__(
        self,
        *,
        db_path: Path,
        store_dir: Path,
        versions_dir: Path,
        keys_dir: Path,
        audit_log: Path,
        allow_unsigned: bool = False,
        readonly: bool = False,
    ) -> None:
        self.db_path = Path(db_path)
        self.store_dir = Path(store_dir)
        self.versions_dir = Path(versions_dir)
        self.trust = TrustStore(Path(keys_dir))
        self.audit = AuditLog(Path(audit_log))
        self.allow_unsigned = allow_unsigned
        self.readonly = readonly
        self.conn = db.connect(self.db_path, readonly=readonly)
        if not readonly:
            # Recovery on open: clean up after a crashed install or removal, unless
            # another process is changing the registry right now (it sweeps itself).
            with self._locked(wait=False):
                pass

    @classmethod
    def open(
        cls, home: HomeLayout, *, allow_unsigned: bool = False, readonly: bool = False
    ) -> Registry:
        """The registry under ``home`` (created on first use unless ``readonly``)."""
        return cls(
            db_path=home.registry_db,
            store_dir=home.store_dir,
            versions_dir=home.versions_dir,
            keys_dir=home.keys_dir,
            audit_log=home.audit_log,
            allow_unsigned=allow_unsigned,
            readonly=readonly,
        )

    @property
    def ready(self) -> bool:
        """False for a database another process has not finished creating."""
        return db.schema_version(self.conn) == db.SCHEMA_VERSION

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------
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
            f"no plugin named {name!r} is in the registry (installed: {known}); install it "
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
        for act in reversed(self.history(name)):
            if act.action in _ACTIVATIONS and act.to_version == current:
                if act.from_version is None:
                    break
                return act.from_version
        raise RegistryError(
            f"{name} has no earlier active version to roll back to (active: {current}); "
            f"pick one with `mcphost plugin rollback {name} --to VERSION` "
            f"(installed: {', '.join(rec.versions)})",
            data={"plugin": name},
        )

    # -- changing ------------------------------------------------------------------
    @contextmanager
    def _locked(self, wait: bool = True) -> Iterator[bool]:
        """Hold the registry's change lock (after sweeping leftovers). With ``wait``
        false, yield False at once when another process holds it."""
        if self.readonly:
            raise RegistryError("this registry was opened read-only; open it writable to change it")
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(
            self.db_path.with_name(self.db_path.name + ".lock"),
            os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
            0o644,
        )
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            self._sweep()
            yield True
        finally:
            os.close(fd)

    def recover(self) -> RecoveryReport:
        """Delete what interrupted installs and removals left behind (under the lock)."""
        with self._locked():
            return self._last_sweep

    _last_sweep = RecoveryReport()

    def _sweep(self) -> RecoveryReport:
        removed_dirs: list[str] = []
        removed_wheels: list[str] = []
        known_dirs = {r[0] for r in self.conn.execute("SELECT dir FROM versions")}
        known_shas = {r[0] for r in self.conn.execute("SELECT wheel_sha256 FROM versions")}
        for special in (BUILDING, TRASH):
            d = self.versions_dir / special
            if d.is_dir():
                for leftover in d.iterdir():
                    discard_tree(leftover)
                    removed_dirs.append(str(leftover))
        if self.versions_dir.is_dir():
            for plugin_dir in self.versions_dir.iterdir():
                if plugin_dir.name in (BUILDING, TRASH) or not plugin_dir.is_dir():
                    continue
                for vdir in plugin_dir.iterdir():
                    if f"{plugin_dir.name}/{vdir.name}" not in known_dirs:
                        discard_tree(vdir)
                        removed_dirs.append(str(vdir))
                if not any(plugin_dir.iterdir()):
                    plugin_dir.rmdir()
        if self.store_dir.is_dir():
            for f in self.store_dir.iterdir():
                if f.name.startswith(".") or (f.suffix == ".whl" and f.stem not in known_shas):
                    f.unlink(missing_ok=True)
                    removed_wheels.append(str(f))
        if removed_dirs or removed_wheels:
            log.warning(
                "registry recovery removed %d leftover directories and %d wheels",
                len(removed_dirs),
                len(removed_wheels),
            )
        self._last_sweep = RecoveryReport(removed_dirs=removed_dirs, removed_wheels=removed_wheels)
        return self._last_sweep

    def check(self, wheel: Path, *, allow_key_change: bool = False) -> CheckedWheel:
        """Verify a wheel and check it may be installed; nothing changes.

        A refused verification is written to the audit log.
        """
        wheel = Path(wheel)
        try:
            if wheel.stat().st_size > _MAX_WHEEL:
                raise RegistryError(f"{wheel} is larger than {_MAX_WHEEL} bytes")
            data = wheel.read_bytes()
        except OSError as exc:
            raise RegistryError(
                f"cannot read the wheel {wheel}: {exc.strerror or exc}; check the path",
                data={"wheel": str(wheel)},
            ) from exc
        try:
            checked = check_wheel(
                data, source=str(wheel), trust=self.trust, allow_unsigned=self.allow_unsigned
            )
        except VerificationError as exc:
            self.audit.append(
                "plugin.install",
                outcome="refused",
                plugin=str(exc.data["plugin"]) if exc.data.get("plugin") else None,
                version=str(exc.data["version"]) if exc.data.get("version") else None,
                key_id=exc.data.get("key_id"),
                detail=f"{wheel}: {exc.message}",
            )
            raise
        self._check_allowed(checked, allow_key_change)
        return checked

    def _check_allowed(self, w: CheckedWheel, allow_key_change: bool) -> bool:
        """Ownership, sequence and same-version rules. True when this exact wheel is
        installed already."""
        row = self._plugin_row(w.plugin)
        existing = self.conn.execute(
            "SELECT version, wheel_sha256 FROM versions WHERE plugin = ?", (w.plugin,)
        ).fetchall()
        for r in existing:
            if Version(r["version"]) == Version(w.version):
                if r["wheel_sha256"] == w.sha256:
                    return True
                self._refuse(
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
            self._refuse(
                w,
                f"plugin name {w.plugin} belongs to key {owner}, but {w.source} is signed "
                f"by {signer}; if the publisher really changed keys, install with "
                "--allow-key-change",
                "key_change",
            )
        if w.sequence is not None and owner == w.key_id and w.sequence < row["max_sequence"]:
            self._refuse(
                w,
                f"{w.label} has manifest sequence {w.sequence}, older than sequence "
                f"{row['max_sequence']} already installed for {w.plugin}: refusing a "
                "rollback attack. To go back to an installed version use "
                f"`mcphost plugin rollback {w.plugin} --to VERSION`",
                "rollback",
            )
        return False

    def _refuse(self, w: CheckedWheel, message: str, reason: str) -> None:
        self.audit.append(
            "plugin.install",
            plugin=w.plugin,
            version=w.version,
            key_id=w.key_id,
            hashes={"wheel": w.sha256},
            outcome="refused",
            detail=message,
        )
        raise RegistryError(
            message, data={"plugin": w.plugin, "version": w.version, "reason": reason}
        )

    def install(
        self,
        w: CheckedWheel,
        *,
        activate: bool = True,
        find_links: Iterable[Path] = (),
        allow_key_change: bool = False,
        reason: str = "",
        progress: Progress = lambda _: None,
    ) -> InstallResult:
        """Install a checked wheel side by side with the other versions; optionally make
        it the active one. Installing the same wheel again changes nothing else."""
        user = _user()
        with self._locked():
            already = self._check_allowed(w, allow_key_change)
            if not already:
                progress("storing the wheel")
                store_wheel(self.store_dir, w.sha256, w.data)
                crash_point("install_stored")
                dest = f"{w.plugin}/{w.version}-{w.sha256[:12]}"
                links = [Path(w.source).resolve().parent, *find_links]
                _root, deps_files = build_version_dir(
                    self.versions_dir,
                    dest,
                    w.members,
                    w.requires,
                    find_links=links,
                    progress=progress,
                    crash=crash_point,
                )
                crash_point("install_renamed")
            progress("recording the install")
            previous: str | None = None
            activated = False
            with db.transaction(self.conn):
                now = time.time()
                row = self._plugin_row(w.plugin)
                if row is None:
                    self.conn.execute(
                        "INSERT INTO plugins (name, owner_key, max_sequence, created_at) "
                        "VALUES (?, ?, 0, ?)",
                        (w.plugin, w.key_id, now),
                    )
                    row = self._plugin_row(w.plugin)
                    assert row is not None
                elif w.key_id is not None and row["owner_key"] != w.key_id:
                    # Unowned so far (only unsigned versions), or an allowed key change.
                    self.conn.execute(
                        "UPDATE plugins SET owner_key = ? WHERE name = ?", (w.key_id, w.plugin)
                    )
                if w.sequence is not None:
                    self.conn.execute(
                        "UPDATE plugins SET max_sequence = MAX(max_sequence, ?) WHERE name = ?",
                        (w.sequence, w.plugin),
                    )
                version = w.version
                if already:
                    version = self._find_version_string(w.plugin, w.version)
                else:
                    self.conn.execute(
                        "INSERT INTO versions (plugin, version, dist_name, wheel_sha256, "
                        "wheel_name, entry, dir, dist_info, key_id, sequence, permissions, "
                        "tools, installed_at, installed_by, deps_files) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)",
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
                            user,
                            msgspec.json.encode(deps_files).decode(),
                        ),
                    )
                    self._log(w.plugin, "install", None, w.version, reason or "installed")
                previous = row["active_version"]
                if activate and previous != version:
                    self._set_active(
                        w.plugin, previous, version, "activate", reason or "activated on install"
                    )
                    activated = True
                db.bump_generation(self.conn)
                crash_point("install_before_commit")
            crash_point("install_committed")
        if not already:
            self.audit.append(
                "plugin.install",
                plugin=w.plugin,
                version=w.version,
                key_id=w.key_id,
                hashes={"wheel": w.sha256},
                detail=f"from {w.source}" + ("" if w.signed else " (unsigned)"),
            )
        if activated:
            self.audit.append(
                "plugin.activate",
                plugin=w.plugin,
                version=version,
                key_id=w.key_id,
                detail=f"previous: {previous or 'none'}",
            )
        return InstallResult(
            plugin=w.plugin,
            version=version,
            installed=not already,
            activated=activated,
            previous=previous if activated else None,
            key_id=w.key_id,
            wheel_sha256=w.sha256,
            warnings=w.warnings,
        )

    def _find_version_string(self, name: str, version: str) -> str:
        return self.version(name, version).version

    def _log(
        self, plugin: str, action: str, from_v: str | None, to_v: str | None, reason: str
    ) -> None:
        self.conn.execute(
            "INSERT INTO history (plugin, at, user, action, from_version, to_version, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (plugin, time.time(), _user(), action, from_v, to_v, reason),
        )

    def _set_active(
        self, name: str, old: str | None, new: str | None, action: str, reason: str
    ) -> None:
        self.conn.execute("UPDATE plugins SET active_version = ? WHERE name = ?", (new, name))
        self._log(name, action, old, new, reason)

    def dependency_changes(self, name: str, version: str) -> list[str]:
        """How the installed dependencies of a version differ from what was installed
        (empty: not at all). Dependencies carry no signature of the plugin's publisher,
        so the registry's record of their hashes is what they are checked against."""
        rec = self.version(name, version)
        if rec.deps_files is None:
            return []
        return tree_changes(Path(rec.deps_dir), rec.deps_files)

    def set_tools(self, name: str, version: str, tools: list[ToolSpec]) -> None:
        """Store the tool descriptors a handshake of ``name`` ``version`` reported."""
        rec = self.version(name, version)
        with self._locked(), db.transaction(self.conn):
            self.conn.execute(
                "UPDATE versions SET tools = ? WHERE plugin = ? AND version = ?",
                (msgspec.json.encode(tools).decode(), name, rec.version),
            )

    def activate(
        self, name: str, version: str, *, action: str = "swap", reason: str = ""
    ) -> Activation:
        """Make ``version`` the one that serves ``name``; running hosts follow within a
        second. ``action`` ("swap" or "rollback") is what the history records."""
        with self._locked():
            rec = self.version(name, version)
            old = self.plugin(name).active_version
            with db.transaction(self.conn):
                self._set_active(name, old, rec.version, action, reason or action)
                db.bump_generation(self.conn)
                crash_point("swap_before_commit")
            crash_point("swap_committed")
        self.audit.append(
            f"plugin.{action}",
            plugin=name,
            version=rec.version,
            key_id=rec.key_id,
            hashes={"wheel": rec.wheel_sha256},
            detail=f"from {old or 'none'}" + (f": {reason}" if reason else ""),
        )
        return self.history(name)[-1]

    def rollback(self, name: str, to: str | None = None, *, reason: str = "") -> Activation:
        """Go back to the version that served before (or to ``to``)."""
        target = to if to is not None else self.rollback_target(name)
        current = self.plugin(name).active_version
        rec = self.version(name, target)
        if rec.version == current:
            raise RegistryError(
                f"{name} {rec.version} is the active version already; nothing to roll back",
                data={"plugin": name, "version": rec.version},
            )
        return self.activate(name, rec.version, action="rollback", reason=reason)

    def remove(
        self, name: str, version: str | None = None, *, force: bool = False, reason: str = ""
    ) -> list[str]:
        """Remove one version, or every version, of ``name``; returns the versions removed.

        The active version is kept unless ``force``; removing it stops the plugin in
        running hosts.
        """
        with self._locked():
            plugin = self.plugin(name)
            recs = [self.version(name, version)] if version is not None else self.versions(name)
            active = plugin.active_version
            doomed = {r.version for r in recs}
            if active in doomed and not force:
                others = [v for v in plugin.versions if v != active]
                hint = (
                    f"swap to another version first (`mcphost plugin swap {name} {others[-1]}`) or "
                    if others and version is not None
                    else ""
                )
                raise RegistryError(
                    f"{name} {active} is the active version; {hint}pass --force to remove it "
                    "and stop the plugin",
                    data={"plugin": name, "version": active},
                )
            with db.transaction(self.conn):
                for r in recs:
                    self.conn.execute(
                        "DELETE FROM versions WHERE plugin = ? AND version = ?", (name, r.version)
                    )
                    self._log(name, "remove", r.version, None, reason or "removed")
                if active in doomed:
                    self._set_active(
                        name, active, None, "deactivate", reason or "its active version was removed"
                    )
                db.bump_generation(self.conn)
                crash_point("remove_before_commit")
            crash_point("remove_committed")
            trashed = [move_to_trash(self.versions_dir, Path(r.root)) for r in recs]
            crash_point("remove_trashed")
            for t in trashed:
                if t is not None:
                    discard_tree(t)
            still = {r[0] for r in self.conn.execute("SELECT wheel_sha256 FROM versions")}
            for r in recs:
                if r.wheel_sha256 not in still:
                    wheel_path(self.store_dir, r.wheel_sha256).unlink(missing_ok=True)
        for r in recs:
            self.audit.append(
                "plugin.remove",
                plugin=name,
                version=r.version,
                key_id=r.key_id,
                hashes={"wheel": r.wheel_sha256},
                detail="was active" if r.version == active else None,
            )
        return sort_versions(doomed)

    def request_reset(self, name: str) -> None:
        """Ask running hosts to clear ``name``'s failed state (next call starts it again)."""
        self.plugin(name)
        with self._locked(), db.transaction(self.conn):
            self.conn.execute(
                "UPDATE plugins SET reset_serial = reset_serial + 1 WHERE name = ?", (name,)
            )
            db.bump_generation(self.conn)
