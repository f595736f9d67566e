"""Rebuilding the registry's records from the store's signed wheels.

When the database is lost, emptied or damaged, every installed version is still on
disk: its wheel in ``store/`` (named by its sha256) and its files in ``versions/``. Each
wheel is verified against the trust store as an install would; its signed manifest
gives the plugin, version, key, sequence and permissions. The audit log, when it is
there, says which version was active (its last activation, swap or rollback), which
one was active before it (where ``plugin rollback`` goes) and who installed what when;
without it the highest version becomes active. The new database is
built beside the old one and renamed into place; the old one is kept, renamed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from packaging.version import Version

from mcphost.sdk.errors import MCPHostError, RegistryError
from mcphost.security.audit import AuditLog
from mcphost.security.truststore import TrustStore

from . import db
from .crash import crash_point
from .reader import HomeLayout, sort_versions
from .recovery import change_lock
from .store import fsync_dir, hash_tree
from .wheels import CheckedWheel, check_wheel
from .writes import current_user

__all__ = ["RebuildReport", "rebuild_registry"]

_REASON = "recovered by `mcphost registry rebuild`"
_SWITCHES = ("plugin.activate", "plugin.swap", "plugin.rollback")


@dataclass
class RebuildReport:
    """What a rebuild recorded and what it left out (and why)."""

    #: Plugin -> versions recorded, oldest first.
    plugins: dict[str, list[str]] = field(default_factory=dict)
    #: Plugin -> the version made active.
    active: dict[str, str | None] = field(default_factory=dict)
    #: Wheel file -> why it was not recorded.
    skipped: dict[str, str] = field(default_factory=dict)
    #: Where the replaced database was kept (None when there was none).
    kept: str | None = None


@dataclass
class _History:
    """What the audit log remembers of each plugin and wheel."""

    active: dict[str, str | None] = field(default_factory=dict)
    #: The version active before the last switch (what ``plugin rollback`` returns to).
    previous: dict[str, str | None] = field(default_factory=dict)
    installed: dict[str, dict[str, Any]] = field(default_factory=dict)


def _history(audit: AuditLog) -> _History:
    h = _History()
    try:
        entries = audit.read()
    except MCPHostError:
        return h
    for e in entries:
        if e.get("outcome") != "ok" or not isinstance(e.get("plugin"), str):
            continue
        plugin, action = e["plugin"], e.get("action")
        if action in _SWITCHES:
            h.previous[plugin] = h.active.get(plugin)
            h.active[plugin] = e.get("version")
        elif action == "plugin.remove" and e.get("detail") == "was active":
            h.previous[plugin] = None
            h.active[plugin] = None
        elif action == "plugin.install" and isinstance(e.get("hashes"), dict):
            h.installed[str(e["hashes"].get("wheel"))] = e
    return h


def _healthy(path: Path) -> int | None:
    """How many versions a readable, intact database records (None: it is not one)."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    try:
        conn = db.connect(path, readonly=True)
    except MCPHostError:
        return None
    try:
        if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            return None
        if db.schema_version(conn) < 1:
            return None
        return int(conn.execute("SELECT COUNT(*) FROM versions").fetchone()[0])
    except MCPHostError:
        return None
    finally:
        conn.close()


def _checked(
    home: HomeLayout, trust: TrustStore, allow_unsigned: bool
) -> tuple[list[CheckedWheel], dict[str, str]]:
    found: dict[tuple[str, Version], CheckedWheel] = {}
    skipped: dict[str, str] = {}
    wheels = sorted(home.store_dir.glob("*.whl")) if home.store_dir.is_dir() else []
    for path in wheels:
        if path.name.startswith("."):
            continue
        try:
            w = check_wheel(
                path.read_bytes(), source=str(path), trust=trust, allow_unsigned=allow_unsigned
            )
        except (MCPHostError, OSError) as exc:
            skipped[str(path)] = str(getattr(exc, "message", exc))
            continue
        if w.sha256 != path.stem:
            skipped[str(path)] = "its content does not match its name (sha256)"
            continue
        if not (home.versions_dir / _dest(w)).is_dir():
            skipped[str(path)] = (
                f"{w.label} has no installed directory; install it again with "
                f"`mcphost plugin install --yes {path}`"
            )
            continue
        key = (w.plugin, Version(w.version))
        other = found.get(key)
        if other is not None:
            skipped[str(path)] = f"{w.label} is also installed from {other.source}"
            continue
        found[key] = w
    named = {_dest(w) for w in found.values()}
    for plugin_dir in sorted(home.versions_dir.iterdir()) if home.versions_dir.is_dir() else []:
        if plugin_dir.name.startswith(".") or not plugin_dir.is_dir():
            continue
        for vdir in sorted(plugin_dir.iterdir()):
            if f"{plugin_dir.name}/{vdir.name}" not in named:
                skipped[str(vdir)] = (
                    "no verified wheel in the store belongs to it; it is left alone (move "
                    "it out of the home if it is not needed)"
                )
    return list(found.values()), skipped


def _dest(w: CheckedWheel) -> str:
    return f"{w.plugin}/{w.version}-{w.sha256[:12]}"


def _write(
    conn: Any,
    versions_dir: Path,
    wheels: list[CheckedWheel],
    h: _History,
    user: str,
    report: RebuildReport,
) -> None:
    by_plugin: dict[str, list[CheckedWheel]] = {}
    for w in wheels:
        by_plugin.setdefault(w.plugin, []).append(w)
    now = time.time()
    with db.transaction(conn):
        for plugin, ws in sorted(by_plugin.items()):
            ws.sort(key=lambda w: Version(w.version))
            versions = [w.version for w in ws]
            # The name belongs to the key of the version installed last (an allowed key
            # change moves it); rollback protection counts that key's sequences.
            order = sorted(ws, key=lambda w: h.installed.get(w.sha256, {}).get("unix", 0))
            signed = [w for w in order if w.key_id is not None]
            owner = signed[-1].key_id if signed else None
            max_seq = max((w.sequence or 0 for w in ws if w.key_id == owner), default=0)
            active = h.active[plugin] if plugin in h.active else versions[-1]
            if active is not None and active not in versions:
                active = versions[-1]
            conn.execute(
                "INSERT INTO plugins (name, owner_key, active_version, max_sequence, "
                "created_at) VALUES (?, ?, ?, ?, ?)",
                (plugin, owner, active, max_seq, now),
            )
            for w in ws:
                seen = h.installed.get(w.sha256, {})
                detail = str(seen.get("detail", ""))
                wheel_name = (
                    Path(detail.removeprefix("from ")).name
                    if detail.startswith("from ")
                    else f"{w.sha256}.whl"
                )
                root = versions_dir / _dest(w)
                conn.execute(
                    "INSERT INTO versions (plugin, version, dist_name, wheel_sha256, "
                    "wheel_name, entry, dir, dist_info, key_id, sequence, permissions, "
                    "tools, installed_at, installed_by, deps_files) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)",
                    (
                        w.plugin,
                        w.version,
                        w.dist_name,
                        w.sha256,
                        wheel_name.removesuffix(" (unsigned)"),
                        w.entry,
                        _dest(w),
                        w.dist_info,
                        w.key_id,
                        w.sequence,
                        msgspec.json.encode(w.permissions).decode(),
                        float(seen.get("unix", root.stat().st_mtime)),
                        str(seen.get("actor", user)),
                        msgspec.json.encode(hash_tree(root / "deps")).decode(),
                    ),
                )
                conn.execute(
                    "INSERT INTO history (plugin, at, user, action, from_version, to_version, "
                    "reason) VALUES (?, ?, ?, 'install', NULL, ?, ?)",
                    (plugin, now, user, w.version, _REASON),
                )
            if active is not None:
                before = h.previous.get(plugin) if active == h.active.get(plugin) else None
                conn.execute(
                    "INSERT INTO history (plugin, at, user, action, from_version, to_version, "
                    "reason) VALUES (?, ?, ?, 'activate', ?, ?, ?)",
                    (plugin, now, user, before if before in versions else None, active, _REASON),
                )
            report.plugins[plugin] = sort_versions(versions)
            report.active[plugin] = active
        db.bump_generation(conn)


def rebuild_registry(
    home: HomeLayout, *, allow_unsigned: bool = False, force: bool = False
) -> RebuildReport:
    """Rebuild the records from the store's wheels; refuse a healthy database that
    records versions unless ``force``. Crash-safe: a crash leaves the old database or
    the new one (or none, which the next rebuild handles)."""
    user = current_user()
    report = RebuildReport()
    path = home.registry_db
    with change_lock(path):
        recorded = _healthy(path)
        if recorded and not force:
            raise RegistryError(
                f"the registry database {path} is intact and records {recorded} versions; "
                "rebuilding replaces its history with what the wheels and the audit log "
                "say. Pass --force to rebuild it anyway",
                data={"reason": "healthy"},
            )
        trust = TrustStore(home.keys_dir)
        wheels, report.skipped = _checked(home, trust, allow_unsigned)
        fresh = path.with_name(path.name + ".rebuild")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{fresh}{suffix}").unlink(missing_ok=True)
        conn = db.connect(fresh)
        try:
            _write(
                conn, home.versions_dir, wheels, _history(AuditLog(home.audit_log)), user, report
            )
        finally:
            conn.close()
        fd = os.open(fresh, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        crash_point("rebuild_written")
        # The old database and its WAL go aside together: a stale -wal beside the new
        # file would be read as part of it.
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        for suffix in ("", "-wal", "-shm"):
            old = Path(f"{path}{suffix}")
            if old.exists():
                kept = path.with_name(f"{path.name}.damaged-{stamp}{suffix}")
                os.rename(old, kept)
                if not suffix:
                    report.kept = str(kept)
        crash_point("rebuild_set_aside")
        os.rename(fresh, path)
        fsync_dir(path.parent)
    AuditLog(home.audit_log).append(
        "registry.rebuild",
        detail=(
            f"recorded {sum(len(v) for v in report.plugins.values())} versions of "
            f"{len(report.plugins)} plugins from the store; {len(report.skipped)} wheels "
            f"left out" + (f"; the old database is kept as {report.kept}" if report.kept else "")
        ),
    )
    return report
