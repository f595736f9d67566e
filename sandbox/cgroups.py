"""One pids and memory cgroup per worker, on cgroup v2 or v1, whichever is writable.

rlimits count processes per user and memory and CPU time per process; a cgroup counts
them for the worker and everything it starts, whatever uid they run as. The kernel
enforces the pids and memory limits; the CPU time the cgroup accounts (v2 always, v1
with the ``cpuacct`` controller) and its memory in use are what the host's supervisor
reads to watch the worker as a whole. The worker joins its cgroups
between fork and exec (:meth:`WorkerCgroup.join`), before any uid change, so nothing it
runs is ever outside them. Cgroups are created below the host's own cgroup, so any limit
placed on the host still applies to its workers.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CgroupManager", "WorkerCgroup", "check_member"]

_MIB = 1024 * 1024
_counter = itertools.count()
#: v1 controllers a worker gets a cgroup in: limits (pids, memory) and CPU accounting.
_V1_CONTROLLERS = ("cpuacct", "memory", "pids")


@dataclass(eq=False)
class WorkerCgroup:
    """The cgroup directories one worker lives in (one per v1 controller, or one v2)."""

    dirs: list[str]
    version: int
    _procs: list[bytes] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._procs = [os.fsencode(os.path.join(d, "cgroup.procs")) for d in self.dirs]

    def join(self) -> None:
        """Move the calling process into every directory; safe between fork and exec."""
        for path in self._procs:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    @property
    def name(self) -> str:
        """The directory name, the same in every hierarchy."""
        return os.path.basename(self.dirs[0])

    def open_procs(self) -> list[int]:
        """Write fds on each ``cgroup.procs``: the worker moves itself in with them.

        The kernel checks the opener's credentials, so a worker that already dropped
        its uid can still move itself in with them (and with nothing else).
        """
        fds: list[int] = []
        try:
            for path in self._procs:
                fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def pids(self) -> set[int]:
        """Processes currently in the cgroup."""
        out: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError):
                out.update(int(x) for x in Path(d, "cgroup.procs").read_text().split())
        return out

    def read(self, name: str) -> str | None:
        """A control file's content from whichever directory has it, e.g. ``pids.max``."""
        for d in self.dirs:
            with contextlib.suppress(OSError):
                return Path(d, name).read_text().strip()
        return None

    def _stat(self, name: str) -> dict[str, int]:
        text = self.read(name) or ""
        out: dict[str, int] = {}
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[key] = int(value)
        return out

    def memory_bytes(self) -> int | None:
        """Memory the worker's processes hold, each page counted once: what the cgroup is
        charged less the file cache it could drop (the "working set"); ``None`` when no
        memory controller accounts it."""
        if self.version == 2:
            current, inactive = self.read("memory.current"), "inactive_file"
        else:
            current, inactive = self.read("memory.usage_in_bytes"), "total_inactive_file"
        if current is None:
            return None
        return max(0, int(current) - self._stat("memory.stat").get(inactive, 0))

    def cpu_seconds(self) -> float | None:
        """CPU time used by every process that ever ran in the cgroup; ``None`` when no
        controller accounts it (v1 without ``cpuacct``)."""
        if self.version == 2:
            usec = self._stat("cpu.stat").get("usage_usec")
            return None if usec is None else usec / 1e6
        ns = self.read("cpuacct.usage")
        return None if ns is None else int(ns) / 1e9

    def oom_kills(self) -> int:
        """How many of the worker's processes the kernel killed for want of memory."""
        if self.version == 2:
            return self._stat("memory.events").get("oom_kill", 0)
        return self._stat("memory.oom_control").get("oom_kill", 0)

    def try_remove(self) -> bool:
        """Kill what is left inside and remove the directories if they are empty now;
        True once they are all gone. Never waits."""
        gone = True
        for d in self.dirs:
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError:
                gone = False
        if not gone:
            if self.version == 2:
                for d in self.dirs:
                    with contextlib.suppress(OSError):
                        Path(d, "cgroup.kill").write_text("1")
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return gone

    def remove(self, timeout: float = 2.0) -> None:
        """Kill what is left inside and remove the directories (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        for d in self.dirs:
            if self.version == 2:
                with contextlib.suppress(OSError):
                    Path(d, "cgroup.kill").write_text("1")
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                for pid in self.pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                # Killed processes leave the cgroup within microseconds; no event to wait on
                # exists on v1, so poll briefly.
                time.sleep(0.005)


def check_member(name: str, count: int) -> None:
    """Raise :class:`OSError` unless this process is in ``count`` cgroups called ``name``.

    The worker checks this before it loads plugin code: outside its limits it must not run.
    """
    with open("/proc/self/cgroup") as f:
        inside = sum(line.rstrip("\n").endswith("/" + name) for line in f)
    if inside < count:
        raise OSError(
            f"worker is in {inside} of its {count} cgroups named {name}; "
            "it refuses to run outside its limits"
        )


@dataclass
class CgroupManager:
    """Finds a writable cgroup hierarchy and creates worker cgroups in it."""

    #: v2: the parent directory. v1: controller name -> parent directory.
    v2_parent: str | None = None
    v1_parents: dict[str, str] = field(default_factory=dict)
    reason: str = ""

    @classmethod
    def detect(
        cls, mounts: str = "/proc/self/mounts", own: str = "/proc/self/cgroup"
    ) -> CgroupManager:
        """Look at the mounted hierarchies and the host's own cgroup; prefer v2."""
        try:
            mount_lines = Path(mounts).read_text().splitlines()
            own_lines = Path(own).read_text().splitlines()
        except OSError as exc:
            return cls(reason=f"cannot read cgroup information: {exc}")
        own_v1: dict[str, str] = {}
        own_v2 = "/"
        for line in own_lines:
            _, ctrls, path = line.split(":", 2)
            if ctrls == "":
                own_v2 = path
            for c in ctrls.split(","):
                own_v1[c] = path
        v2_mount: str | None = None
        v1_mounts: dict[str, str] = {}
        for line in mount_lines:
            parts = line.split()
            if len(parts) < 4:
                continue
            where, fstype, opts = parts[1], parts[2], parts[3].split(",")
            if fstype == "cgroup2" and v2_mount is None:
                v2_mount = where
            elif fstype == "cgroup":
                for c in _V1_CONTROLLERS:
                    if c in opts:
                        v1_mounts[c] = where
        reasons = []
        if v2_mount is not None:
            parent = os.path.join(v2_mount, own_v2.lstrip("/"))
            why = _v2_usable(parent)
            if not why:
                return cls(v2_parent=parent).sweep()
            reasons.append(f"v2 at {parent}: {why}")
        parents = {}
        for c, where in v1_mounts.items():
            parent = os.path.join(where, own_v1.get(c, "/").lstrip("/"))
            if os.access(parent, os.W_OK):
                parents[c] = parent
            else:
                reasons.append(f"v1 {c} at {parent}: not writable")
        if parents.keys() & {"pids", "memory"}:
            return cls(v1_parents=parents).sweep()
        if not v1_mounts and v2_mount is None:
            reasons.append("no cgroup hierarchy is mounted")
        return cls(reason="; ".join(reasons))

    def sweep(self) -> CgroupManager:
        """Remove worker cgroups left behind by hosts that ended without cleaning up.

        Only empty ones, a minute old, whose creating host process is gone; returns ``self``.
        """
        parents = [self.v2_parent] if self.v2_parent else list(self.v1_parents.values())
        for parent in parents:
            try:
                names = os.listdir(parent)
            except OSError:
                continue
            for name in names:
                parts = name.rsplit("-", 2)
                if not name.startswith("mcphost-") or len(parts) != 3 or not parts[1].isdigit():
                    continue
                path = os.path.join(parent, name)
                # The age guards a host in another pid namespace between create and join.
                with contextlib.suppress(OSError):  # not empty, or already gone
                    if not _alive(int(parts[1])) and time.time() - os.stat(path).st_mtime > 60:
                        os.rmdir(path)
        return self

    @property
    def version(self) -> int | None:
        """2, 1, or ``None`` when no writable hierarchy was found."""
        if self.v2_parent:
            return 2
        return 1 if self.v1_parents else None

    def describe(self) -> str:
        """One line for ``mcphost doctor``."""
        if self.v2_parent:
            return f"cgroup v2 below {self.v2_parent}: pids.max, memory.max, no swap"
        if self.v1_parents:
            ctrls = ", ".join(f"{c} below {p}" for c, p in sorted(self.v1_parents.items()))
            return f"cgroup v1 ({ctrls})"
        return f"unavailable ({self.reason})"

    def create(self, label: str, processes: int | None, memory_mb: int | None) -> WorkerCgroup:
        """A fresh cgroup for one worker with the given limits (``None``: not limited)."""
        name = f"mcphost-{_safe(label)}-{os.getpid()}-{next(_counter)}"
        made: list[str] = []
        try:
            if self.v2_parent:
                d = os.path.join(self.v2_parent, name)
                os.mkdir(d)
                made.append(d)
                if processes is not None:
                    Path(d, "pids.max").write_text(str(processes))
                if memory_mb is not None:
                    Path(d, "memory.max").write_text(str(memory_mb * _MIB))
                    with contextlib.suppress(FileNotFoundError):
                        Path(d, "memory.swap.max").write_text("0")
                return WorkerCgroup(made, 2)
            for ctrl, parent in sorted(self.v1_parents.items()):
                d = os.path.join(parent, name)
                os.mkdir(d)
                made.append(d)
                if ctrl == "pids" and processes is not None:
                    Path(d, "pids.max").write_text(str(processes))
                if ctrl == "memory" and memory_mb is not None:
                    Path(d, "memory.limit_in_bytes").write_text(str(memory_mb * _MIB))
                    # Same bound for memory+swap: the worker cannot swap its way past it.
                    with contextlib.suppress(FileNotFoundError):
                        Path(d, "memory.memsw.limit_in_bytes").write_text(str(memory_mb * _MIB))
            return WorkerCgroup(made, 1)
        except OSError:
            for d in reversed(made):
                with contextlib.suppress(OSError):
                    os.rmdir(d)
            raise


def _v2_usable(parent: str) -> str:
    """Empty when worker cgroups with pids and memory can be created below ``parent``."""
    try:
        available = Path(parent, "cgroup.controllers").read_text().split()
    except OSError as exc:
        return f"cannot read cgroup.controllers ({exc.strerror})"
    missing = {"pids", "memory"} - set(available)
    if missing:
        return f"controllers {', '.join(sorted(missing))} not delegated"
    if not os.access(parent, os.W_OK):
        return "not writable"
    try:
        enabled = Path(parent, "cgroup.subtree_control").read_text().split()
        if not {"pids", "memory"} <= set(enabled):
            Path(parent, "cgroup.subtree_control").write_text("+pids +memory")
    except OSError as exc:
        # EBUSY: the host's own cgroup holds processes (the no-internal-process rule);
        # run the host in a leaf cgroup of a delegated subtree.
        return f"cannot enable pids and memory for children ({exc.strerror})"
    return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _safe(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)[:40]
