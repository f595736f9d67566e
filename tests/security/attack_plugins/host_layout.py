"""Looks for where the host keeps things: the jail's command lines, its mounts, its
environment, sys.path, its own paths and every directory it can walk."""

from __future__ import annotations

import os
import sys
from typing import Any

from mcphost.sdk import Context, Plugin

plugin = Plugin("attack_host_layout", description="Learns the host's paths from inside")

#: The system's own trees: not the host's layout, and too big to walk in a call.
SKIP = ("/proc", "/sys", "/dev", "/usr")


def _read(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError as exc:
        return exc.errno


def _link(path: str) -> Any:
    try:
        return os.readlink(path)
    except OSError as exc:
        return exc.errno


@plugin.tool
def attack(ctx: Context, guesses: list[str]) -> dict[str, Any]:
    """Everything a plugin can read that might name a host path; which guessed paths
    exist (a directory it may not list can still be there)."""
    files = {
        path: _read(path)
        for path in (
            "/proc/1/cmdline",
            "/proc/1/environ",
            "/proc/self/cmdline",
            "/proc/self/environ",
            "/proc/self/mountinfo",
            "/proc/self/maps",
            "/proc/self/cgroup",
        )
    }
    # Walk / and, as Landlock may refuse to list /, every mount point's folder too.
    mountinfo = files["/proc/self/mountinfo"]
    lines = mountinfo.splitlines() if isinstance(mountinfo, str) else []
    points = [line.split(" ")[4] for line in lines]
    dirs: set[str] = set()
    for top in ["/", *(os.path.dirname(p) for p in points)]:
        for root, names, _ in os.walk(top):
            if root.startswith(SKIP) or root in dirs:
                names[:] = []
                continue
            dirs.add(root)
    report = {
        "files": files,
        "links": {
            path: _link(path)
            for path in [
                "/proc/1/cwd",
                "/proc/1/exe",
                "/proc/self/cwd",
                *(f"/proc/self/fd/{fd}" for fd in os.listdir("/proc/self/fd")),
            ]
        },
        "environ": dict(os.environ),
        "sys.path": sys.path,
        "data_dir": str(ctx.data_dir),
        "cwd": os.getcwd(),
        "module": __file__,
        "dirs": sorted(dirs),
        "guessed": [path for path in guesses if os.path.lexists(path)],
    }
    print(report, flush=True)
    return report
