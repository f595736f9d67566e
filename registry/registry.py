"""The registry: which plugin versions are installed, which one is active, and why.

Every change follows the same order, so a crash at any point leaves the old state or
the new one: files are built aside and renamed into place, then one SQLite transaction
records the change; removal commits first and deletes files after. A change journals
the files it is about to make or delete before it touches them, and the sweep under the
registry's lock deletes only what an interrupted change left, as its journal names it
(see :mod:`.recovery`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from mcphost.sdk.errors import MCPHostError, RegistryError, VerificationError
from mcphost.sdk.schema import ToolSpec
from mcphost.security.audit import AuditLog
from mcphost.security.truststore import TrustStore

from . import db
from .approvals import Approval, ApprovedItem
from .crash import crash_point
from .damage import check_records
from .reader import HomeLayout, RegistryReader, sort_versions
from .records import Activation, InstallResult, RecoveryReport
from .recovery import change_lock, journal, settle, sweep
from .repair import restore_version
from .rules import check_install
from .store import build_version_dir, discard_tree, move_to_trash, store_wheel, wheel_path
from .wheels import CheckedWheel, check_wheel
from .writes import current_user, log_change, record_install, set_active

__all__ = ["Registry"]

log = logging.getLogger("mcphost.registry")

Progress = Callable[[str], None]
#: ``data["reason"]`` of the install rules' refusals (.rules), audited where they happen.
_REFUSALS = ("version_conflict", "key_change", "rollback")
_MAX_WHEEL = 2 * 1024 * 1024 * 1024


class Registry(RegistryReader):
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
        super().__init__(
            db_path=db_path, versions_dir=versions_dir, store_dir=store_dir, readonly=readonly
        )
        self.trust = TrustStore(Path(keys_dir))
        self.audit = AuditLog(Path(audit_log))
        self.allow_unsigned = allow_unsigned
        #: What the last sweep deleted (the sweep runs on open and before every change).
        self.last_recovery = RecoveryReport()
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

    def __enter__(self) -> Registry:
        return self

    # -- changing ------------------------------------------------------------------
    @contextmanager
    def _locked(self, wait: bool = True) -> Iterator[bool]:
        """Hold the change lock, after sweeping leftovers of crashed changes. With
        ``wait`` false, yield False at once when another process holds it."""
        if self.readonly:
            raise RegistryError("this registry was opened read-only; open it writable to change it")
        with change_lock(self.db_path, wait=wait) as held:
            if held:
                self.last_recovery = sweep(self.conn, self.versions_dir, self.store_dir)
                check_records(self.conn, self.db_path, self.versions_dir, self.store_dir)
            yield held

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

    def _audit_install(self, w: CheckedWheel, detail: str, outcome: str = "ok") -> None:
        """One audit entry for an install of the checked wheel ``w``."""
        self.audit.append(
            "plugin.install",
            plugin=w.plugin,
            version=w.version,
            key_id=w.key_id,
            hashes={"wheel": w.sha256},
            outcome=outcome,
            detail=detail,
        )

    def _check_allowed(self, w: CheckedWheel, allow_key_change: bool) -> bool:
        """The install rules (see :mod:`.rules`); a refusal goes to the audit log."""
        try:
            return check_install(self.conn, w, allow_key_change)
        except RegistryError as exc:
            self._audit_install(w, exc.message, "refused")
            raise

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
        it the active one. Installing the same wheel again changes nothing else, except
        that installed files changed since are restored from the wheel."""
        links = [Path(w.source).resolve().parent, *find_links]
        repaired: list[str] = []
        pending: list[int] = []
        with self._locked():
            try:
                already = self._check_allowed(w, allow_key_change)
                if already:
                    repaired = self._restore(w, links, progress)
                    version = self._find_version_string(w.plugin, w.version)
                    activated, previous = (
                        self._activate_installed(w.plugin, version, reason)
                        if activate
                        else (False, None)
                    )
                else:
                    dest = f"{w.plugin}/{w.version}-{w.sha256[:12]}"
                    pending.append(self._begin_install(w, dest))
                    progress("storing the wheel")
                    store_wheel(self.store_dir, w.sha256, w.data)
                    crash_point("install_stored")
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
                    version = w.version
                    with db.transaction(self.conn):
                        activated, previous = record_install(
                            self.conn,
                            w,
                            dest,
                            deps_files,
                            reason=reason,
                            pending=pending[0],
                            activate=activate,
                        )
                        db.bump_generation(self.conn)
                    crash_point("install_committed")
            except (OSError, RegistryError) as exc:
                raise self._install_failed(w, exc, pending) from None
        if not already:
            self._audit_install(w, f"from {w.source}" + ("" if w.signed else " (unsigned)"))
        if repaired:
            self.audit.append(
                "plugin.repair",
                plugin=w.plugin,
                version=version,
                key_id=w.key_id,
                hashes={"wheel": w.sha256},
                detail=f"restored from {w.source}: {'; '.join(repaired[:20])}",
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
            repaired=repaired,
        )

    def _begin_install(self, w: CheckedWheel, dest: str) -> int:
        """Journal the install before its first file is written (see .recovery)."""
        if (self.versions_dir / dest).exists():
            # Never journal a directory this change did not make: the sweep would delete it.
            raise RegistryError(
                f"{self.versions_dir / dest} exists but no record of the registry names it, "
                "so it is left alone. If the registry database was lost or replaced, run "
                "`mcphost registry rebuild`; otherwise move that directory out of the home "
                "and install again",
                data={"plugin": w.plugin, "version": w.version},
            )
        stored = wheel_path(self.store_dir, w.sha256).exists()
        with db.transaction(self.conn):
            return journal(self.conn, dest, None if stored else w.sha256)

    def _activate_installed(self, name: str, version: str, reason: str) -> tuple[bool, str | None]:
        """Make a version just installed the active one (no change if it is already)."""
        with db.transaction(self.conn):
            row = self._plugin_row(name)
            previous: str | None = row["active_version"] if row is not None else None
            if previous == version:
                return False, None
            set_active(
                self.conn, name, previous, version, "activate", reason or "activated on install"
            )
            db.bump_generation(self.conn)
        return True, previous

    def _install_failed(
        self, w: CheckedWheel, exc: OSError | RegistryError, pending: list[int]
    ) -> RegistryError:
        """Undo what a failed install wrote (the journal names it) and audit the failure;
        returns the error to raise."""
        error = exc if isinstance(exc, RegistryError) else db.file_error(exc, self.db_path)
        if isinstance(exc, RegistryError) and exc.data.get("reason") in _REFUSALS:
            return error  # a rule refused it; audited already, nothing was written
        try:
            settle(self.conn, self.versions_dir, self.store_dir, pending)
        except (OSError, RegistryError):
            log.warning("the failed install is cleaned up by the next change")
        try:
            self._audit_install(w, error.message, "error")
        except MCPHostError as audit_exc:
            log.error("cannot write the audit log: %s", audit_exc.message)
        return error

    def _restore(self, w: CheckedWheel, links: list[Path], progress: Progress) -> list[str]:
        """Rebuild the files of an installed version from its verified wheel when they
        changed after install; returns what had changed (empty: nothing, nothing done)."""
        rec = self.version(w.plugin, w.version)
        changes, deps_files = restore_version(self.versions_dir, rec, w, links, progress)
        if deps_files is not None:
            with db.transaction(self.conn):
                self.conn.execute(
                    "UPDATE versions SET deps_files = ? WHERE plugin = ? AND version = ?",
                    (msgspec.json.encode(deps_files).decode(), w.plugin, rec.version),
                )
                db.bump_generation(self.conn)
        return changes

    def _find_version_string(self, name: str, version: str) -> str:
        return self.version(name, version).version

    def set_tools(self, name: str, version: str, tools: list[ToolSpec]) -> None:
        """Store the tool descriptors a handshake of ``name`` ``version`` reported."""
        rec = self.version(name, version)
        with self._locked(), db.transaction(self.conn):
            self.conn.execute(
                "UPDATE versions SET tools = ? WHERE plugin = ? AND version = ?",
                (msgspec.json.encode(tools).decode(), name, rec.version),
            )

    def approve(self, name: str, version: str, items: list[ApprovedItem]) -> Approval:
        """Record that the operator approved ``items`` (what clients are shown of the
        version's tools) for ``name`` ``version``; hosts refuse a worker of that version
        whose handshake differs. Replaces an earlier approval of the version."""
        rec = self.version(name, version)
        approval = Approval(at=time.time(), by=current_user(), items=items)
        with self._locked(), db.transaction(self.conn):
            self.conn.execute(
                "UPDATE versions SET approved = ? WHERE plugin = ? AND version = ?",
                (msgspec.json.encode(approval).decode(), name, rec.version),
            )
            db.bump_generation(self.conn)
        return approval

    def activate(
        self, name: str, version: str, *, action: str = "swap", reason: str = ""
    ) -> Activation:
        """Make ``version`` the one that serves ``name``; running hosts follow within a
        second. ``action`` ("swap" or "rollback") is what the history records."""
        with self._locked():
            rec = self.version(name, version)
            old = self.plugin(name).active_version
            with db.transaction(self.conn):
                set_active(self.conn, name, old, rec.version, action, reason or action)
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
            pending: list[int] = []
            with db.transaction(self.conn):
                for r in recs:
                    self.conn.execute(
                        "DELETE FROM versions WHERE plugin = ? AND version = ?", (name, r.version)
                    )
                    rel = Path(r.root).relative_to(self.versions_dir).as_posix()
                    pending.append(journal(self.conn, rel, r.wheel_sha256))
                    log_change(self.conn, name, "remove", r.version, None, reason or "removed")
                if active in doomed:
                    set_active(
                        self.conn,
                        name,
                        active,
                        None,
                        "deactivate",
                        reason or "its active version was removed",
                    )
                db.bump_generation(self.conn)
                crash_point("remove_before_commit")
            crash_point("remove_committed")
            trashed = [move_to_trash(self.versions_dir, Path(r.root)) for r in recs]
            crash_point("remove_trashed")
            for t in trashed:
                if t is not None:
                    discard_tree(t)
            # The wheels no other version was installed from, and the journal rows.
            settle(self.conn, self.versions_dir, self.store_dir, pending)
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
