"""The jail's file system: what a worker sees, and where.

A jailed worker finds its own directories at fixed paths that say nothing of the host
(as Flatpak gives an app ``/app`` and ``~/.var/app/ID``):

* its code (each directory of :attr:`WorkerSpec.paths`, in order) read-only at
  ``/app/0``, ``/app/1``, ...;
* its data directory, writable and kept across restarts, at ``/data``;
* its scratch directory (``$HOME`` and the working directory), a private tmpfs, at
  ``/home/plugin``.

Nothing of the mcphost home (its path, its ``versions``, ``data`` and ``run`` folders)
is mounted, named in an argument or set in the environment. What stays at its own path
is the system's: ``/usr`` and the few top-level directories it needs, some files of
``/etc``, the interpreter's prefix and mcphost's own code (and the folders those are
reached through), and paths the operator granted, which the plugin is told by name.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from .isolation import WorkerSpec

__all__ = ["APP", "DATA", "HOME", "inside", "mount_args", "overlaps", "top_dir_args"]

#: Where a worker finds its code: ``/app/N`` is the N-th directory of its spec's paths.
APP = "/app"
#: Where a worker finds its data directory.
DATA = "/data"
#: Where a worker finds its scratch directory, its ``$HOME`` and working directory.
HOME = "/home/plugin"

#: Files of /etc a Python worker reads; missing ones are skipped.
_ETC_BASE = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf")
#: Added when the network is granted: name resolution and TLS roots.
_ETC_NETWORK = (
    "resolv.conf",
    "hosts",
    "gai.conf",
    "services",
    "protocols",
    "host.conf",
    "ssl",
    "ca-certificates",
    "pki",
    "crypto-policies",
)
#: Top-level directories that are symlinks into /usr on merged systems.
_TOP_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def inside(spec: WorkerSpec) -> WorkerSpec:
    """``spec`` as the worker sees it in the jail: its own directories at fixed paths."""
    return msgspec.structs.replace(
        spec,
        paths=[f"{APP}/{i}" for i in range(len(spec.paths))],
        data_dir=DATA,
        work_dir=HOME,
    )


def overlaps(spec: WorkerSpec, system: list[str]) -> str | None:
    """What of ``spec``'s grants and the ``system`` folders would land on (or above) the
    jail's own fixed directories, said in words; ``None`` when nothing would."""
    fixed = (APP, DATA, HOME)
    for what, paths in (
        ("the granted path", [*spec.grants.read_paths, *spec.grants.write_paths]),
        ("the interpreter's or mcphost's folder", system),
    ):
        for path in paths:
            p = os.path.abspath(path)
            if any(_under(p, [f]) or _under(f, [p]) for f in fixed):
                return f"{what} {path!r}"
    return None


def top_dir_args() -> list[str]:
    """``/bin``, ``/lib`` and the like: symlinks into /usr, or read-only binds."""
    argv: list[str] = []
    for name in _TOP_DIRS:
        path = "/" + name
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    return argv


def mount_args(spec: WorkerSpec, system: list[str]) -> list[str]:
    """bubblewrap's mount options for ``spec`` (host paths); ``system`` are the
    interpreter's and mcphost's folders, mounted read-only at their own paths."""
    tmp_mb = spec.limits.tmp_mb
    size = ["--size", str(tmp_mb * 1024 * 1024)] if tmp_mb is not None else []
    argv = ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", *size]
    argv += ["--tmpfs", "/tmp", "--ro-bind", "/usr", "/usr", *top_dir_args()]
    etc = list(_ETC_BASE) + (list(_ETC_NETWORK) if spec.grants.network is not None else [])
    argv += ["--perms", "0755", "--dir", "/etc"]
    for name in etc:
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    binds: dict[str, tuple[str, str]] = {}  # destination -> (bwrap option, source)
    for path in [*system, *spec.grants.read_paths]:
        binds.setdefault(os.path.abspath(path), ("--ro-bind-try", os.path.abspath(path)))
    for path in spec.grants.write_paths:
        binds[os.path.abspath(path)] = ("--bind-try", os.path.abspath(path))
    for i, path in enumerate(spec.paths):
        binds[f"{APP}/{i}"] = ("--ro-bind-try", os.path.abspath(path))
    binds[DATA] = ("--bind", os.path.abspath(spec.data_dir))
    # The scratch directory is memory, not the host's disk: bounded like /tmp.
    binds[HOME] = ("--tmpfs", "")
    mounted: list[str] = ["/usr"]
    read_only: list[str] = ["/usr"]
    made: set[str] = set()
    for dest in sorted(binds, key=lambda p: Path(p).parts):
        option, source = binds[dest]
        ro = option == "--ro-bind-try"
        if dest == "/" or (ro and source == dest and _under(dest, read_only)):
            continue
        for parent in reversed(Path(dest).parents):
            p = str(parent)
            if p == "/" or p in made or _under(p, mounted):
                continue
            # Directories bubblewrap makes on the way would be 0700 for root.
            argv += ["--perms", "0755", "--dir", p]
            made.add(p)
        if option == "--tmpfs":
            argv += ["--perms", "1777", *size, "--tmpfs", dest]
        else:
            argv += [option, source, dest]
        mounted.append(dest)
        if ro:
            read_only.append(dest)
    return argv


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)
