"""Files on disk: the content-addressed wheel store and the per-version directories.

Nothing here is visible half-made. A wheel is written to a temp file, synced and renamed
to ``<sha256>.whl``. A version directory is built under ``.building/``, every file and
directory synced, then renamed into place; removal renames it into ``.trash/`` first.
:func:`~.recovery.sweep` deletes what an interrupted process left in either place.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from mcphost.sdk.errors import RegistryError

__all__ = [
    "BUILDING",
    "TRASH",
    "build_version_dir",
    "discard_tree",
    "fsync_dir",
    "hash_tree",
    "move_to_trash",
    "plugin_tree_changes",
    "store_wheel",
    "tree_changes",
    "wheel_path",
]

BUILDING = ".building"
TRASH = ".trash"

Progress = Callable[[str], None]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def wheel_path(store_dir: Path, sha256: str) -> Path:
    return store_dir / f"{sha256}.whl"


def store_wheel(store_dir: Path, sha256: str, data: bytes) -> Path:
    """Keep ``data`` under its sha256; an existing file with that name is kept as it is."""
    store_dir.mkdir(parents=True, exist_ok=True)
    target = wheel_path(store_dir, sha256)
    if target.exists():
        return target
    tmp = store_dir / f".{sha256}.{secrets.token_hex(4)}.tmp"
    try:
        _write_file(tmp, data, mode=0o444)
        os.replace(tmp, target)
    except BaseException:
        # A full disk must not stay full of a half-written wheel.
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(store_dir)
    return target


def _tree_path(member: str) -> str | None:
    """Where a wheel member goes in the plugin directory (``None``: not installed).

    The same mapping ``pip install --target`` uses, and that tree verification expects:
    ``<name>.data/{purelib,platlib,data}/x`` go to ``x``; scripts and headers are left out.
    """
    head, sep, rest = member.partition("/")
    if head.endswith(".data") and sep:
        scheme, sep2, sub = rest.partition("/")
        if scheme in ("purelib", "platlib", "data") and sep2:
            return sub
        return None
    return member


def _write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """A new file holding all of ``data``, synced to disk (never through a symlink)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_and_freeze(root: Path) -> None:
    """fsync every file and directory under ``root``; make the files and their
    directories read-only (the top directory stays writable so it can be moved)."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        d = Path(dirpath)
        for name in filenames:
            p = d / name
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.chmod(p, 0o555 if st.st_mode & 0o111 else 0o444)
        fsync_dir(d)
        if d != root:
            os.chmod(d, 0o555)
        del dirnames


def _install_dependencies(
    requires: list[str], target: Path, find_links: Iterable[Path], progress: Progress
) -> None:
    """``pip install --target`` the plugin's dependencies (never the plugin itself).

    With ``find_links`` the wheels there are tried first without any index, so an install
    whose dependencies are all at hand needs no network; otherwise pip's configured index
    is used too.
    """
    links: list[str] = []
    for d in find_links:
        links += ["--find-links", str(d)]
    base = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "-q",
        "--no-input",
        "--no-compile",
        "--no-warn-script-location",
        "--only-binary",
        ":all:",
        "--target",
        str(target),
        *links,
    ]
    attempts = [[*base, "--no-index", *requires]] if links else []
    attempts.append([*base, *requires])
    error = ""
    for argv in attempts:
        progress(f"installing dependencies: {', '.join(requires)}")
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode == 0:
            # pip writes console scripts into bin/; a plugin never runs them.
            shutil.rmtree(target / "bin", ignore_errors=True)
            return
        error = (proc.stderr or proc.stdout).strip()
    if "No space left on device" in error:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
    error = " | ".join(line.strip() for line in error[-800:].splitlines() if line.strip())
    raise RegistryError(
        f"could not install the dependencies {', '.join(requires)}: {error}; put their "
        "wheels in a directory and pass it with --find-links DIR, or check pip's index "
        "configuration"
    )


def build_version_dir(
    versions_dir: Path,
    dest: str,
    members: dict[str, bytes],
    requires: list[str],
    *,
    find_links: Iterable[Path] = (),
    progress: Progress = lambda _: None,
    crash: Callable[[str], None] = lambda _: None,
    replace: bool = False,
    keep_deps: Path | None = None,
) -> tuple[Path, dict[str, str]]:
    """Build the directory ``versions_dir/dest`` with ``plugin/`` (the wheel's files, from
    the verified bytes) and ``deps/`` (its dependencies), crash-safely.

    With ``replace`` an existing directory is swapped for the new one (to restore files
    changed after install); ``keep_deps`` names a dependency directory to copy instead
    of installing the dependencies again. Returns the directory and the sha256 of every
    file under ``deps/`` (which no signature covers, so the registry records them to
    check before each start)."""
    target = versions_dir / dest
    if target.exists() and not replace:
        raise RegistryError(
            f"{target} exists but no record of the registry names it, so it is left alone. "
            "If the registry database was lost or replaced, run `mcphost registry rebuild`; "
            "otherwise move that directory out of the home and install again"
        )
    building = versions_dir / BUILDING
    building.mkdir(parents=True, exist_ok=True)
    tmp = building / f"{dest.replace('/', '_')}.{secrets.token_hex(4)}"
    tmp.mkdir()
    old: Path | None = None
    try:
        plugin_dir = tmp / "plugin"
        plugin_dir.mkdir()
        progress(f"unpacking {len(members)} files")
        for name, data in sorted(members.items()):
            rel = _tree_path(name)
            if rel is None:
                continue
            _write_file(plugin_dir / rel, data)
        crash("build_unpacked")
        deps_dir = tmp / "deps"
        if keep_deps is not None:
            shutil.copytree(keep_deps, deps_dir, symlinks=True)
        elif requires:
            _install_dependencies(requires, deps_dir, find_links, progress)
        else:
            deps_dir.mkdir()
        deps_files = hash_tree(deps_dir)
        progress("syncing files to disk")
        _sync_and_freeze(tmp)
        fsync_dir(tmp)
        crash("build_synced")
        target.parent.mkdir(parents=True, exist_ok=True)
        if replace and exchange_dirs(tmp, target):
            # One atomic step: the version holds the new tree, ``tmp`` the old one, which
            # a crash from here on leaves in .building for the next sweep.
            old = tmp
            crash("repair_swapped")
        else:
            # Where the file system cannot exchange, a crash between these two renames
            # leaves the version without files: its next start is refused (missing tree)
            # and installing its wheel again rebuilds it.
            old = move_to_trash(versions_dir, target) if replace else None
            os.rename(tmp, target)
        fsync_dir(target.parent)
        fsync_dir(building)
    except BaseException:
        discard_tree(tmp)
        raise
    if old is not None:
        discard_tree(old)
    return target, deps_files


def hash_tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``; a symlink or special file
    maps to a marker no hash equals."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        for name in [*filenames, *(n for n in dirnames if (d / n).is_symlink())]:
            p = d / name
            rel = p.relative_to(root).as_posix()
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "symlink:" + os.readlink(p)
            elif not stat.S_ISREG(st.st_mode):
                out[rel] = "special"
            else:
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                out[rel] = h.hexdigest()
    return out


def tree_changes(root: Path, expected: dict[str, str]) -> list[str]:
    """How the files under ``root`` differ from ``expected`` (empty: not at all)."""
    try:
        found = hash_tree(root)
    except OSError as exc:
        return [f"{root}: {exc.strerror or exc}"]
    problems = [f"{p} was added" for p in sorted(found.keys() - expected.keys())]
    problems += [f"{p} is missing" for p in sorted(expected.keys() - found.keys())]
    problems += [
        f"{p} was changed"
        for p in sorted(found.keys() & expected.keys())
        if found[p] != expected[p]
    ]
    return problems


def plugin_tree_changes(root: Path, members: dict[str, bytes]) -> list[str]:
    """How an installed ``plugin/`` directory differs from the wheel members it was
    built from (empty: not at all): changed, added or missing files, links, specials."""
    expected = {
        rel: hashlib.sha256(data).hexdigest()
        for name, data in members.items()
        if (rel := _tree_path(name)) is not None
    }
    problems = tree_changes(root, expected)
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            with contextlib.suppress(OSError):
                st = os.lstat(p)
                if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    rel = p.relative_to(root).as_posix()
                    problems.append(f"{rel} has {st.st_nlink} hard links")
    return problems


def _make_writable(root: Path) -> None:
    for dirpath, _dirnames, _filenames in os.walk(root):
        with contextlib.suppress(OSError):
            os.chmod(dirpath, 0o755)


def discard_tree(path: Path) -> None:
    """Delete a directory tree the registry made read-only; missing is fine."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    _make_writable(path)
    shutil.rmtree(path, ignore_errors=True)


def exchange_dirs(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False where the C library or the file system cannot; raises OSError for any
    other failure.
    """
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def move_to_trash(versions_dir: Path, path: Path) -> Path | None:
    """Rename ``path`` into the trash (atomic; the caller deletes it after)."""
    if not path.exists():
        return None
    trash = versions_dir / TRASH
    trash.mkdir(parents=True, exist_ok=True)
    target = trash / f"{path.name}.{secrets.token_hex(4)}"
    os.rename(path, target)
    fsync_dir(path.parent)
    return target
