"""Restoring an installed version whose files changed after install.

The registry built each version directory from verified wheel bytes; installing the
same wheel again compares the directory with those bytes (and the dependencies with the
hashes recorded at install) and, when anything differs, builds the directory again and
swaps it in. Nothing is rebuilt when nothing changed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .crash import crash_point
from .records import VersionRecord
from .store import build_version_dir, plugin_tree_changes, tree_changes
from .wheels import CheckedWheel

__all__ = ["installed_changes", "restore_version"]

Progress = Callable[[str], None]


def installed_changes(rec: VersionRecord, w: CheckedWheel) -> tuple[list[str], list[str]]:
    """How the version's plugin files differ from the wheel, and its dependencies from
    the hashes recorded at install (both empty: unchanged)."""
    changes = plugin_tree_changes(Path(rec.plugin_dir), w.members)
    deps = tree_changes(Path(rec.deps_dir), rec.deps_files) if rec.deps_files is not None else []
    return changes, deps


def restore_version(
    versions_dir: Path,
    rec: VersionRecord,
    w: CheckedWheel,
    links: list[Path],
    progress: Progress,
) -> tuple[list[str], dict[str, str] | None]:
    """Rebuild ``rec``'s directory from ``w`` if its files changed; returns what had
    changed and the new dependency hashes (``None`` when nothing was rebuilt)."""
    changes, deps_changes = installed_changes(rec, w)
    if not changes and not deps_changes:
        return [], None
    progress(f"restoring the installed files of {rec.label}")
    _root, deps_files = build_version_dir(
        versions_dir,
        Path(rec.root).relative_to(versions_dir).as_posix(),
        w.members,
        w.requires,
        find_links=links,
        progress=progress,
        replace=True,
        crash=crash_point,
        # Intact dependencies are copied; changed ones are installed again.
        keep_deps=None if deps_changes else Path(rec.deps_dir),
    )
    return changes + [f"dependency {c}" for c in deps_changes], deps_files
