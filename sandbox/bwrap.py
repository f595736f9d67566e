"""The namespace jail: bubblewrap, a seccomp filter, per-worker cgroups, a uid drop.

A worker sees a file system of its own (:mod:`mcphost.sandbox.layout`): the interpreter,
the standard library, site-packages and mcphost's code read-only at their own paths, the
plugin's code read-only at ``/app/N``, a private size-limited ``/tmp``, a minimal
``/dev``, its own ``/proc``, and exactly two writable directories: its data directory at
``/data``, and its scratch directory at ``/home/plugin`` (``$HOME``, a private tmpfs of
the same size as ``/tmp``, gone with the worker). bubblewrap reads its options from an
fd, so the jail's init shows no bind, host path or environment on its command line. The
worker has no network unless granted, no view of other processes, no capabilities and a
clean environment.

Two ways of running, picked from who the host is:

* as root: bubblewrap runs privileged (no user namespace) and ``setpriv`` drops the
  worker to an unprivileged uid (65534 unless configured) with an empty capability
  bounding set; its data and scratch directories are given to that uid. Nested user
  namespaces are refused by seccomp.
* as anyone else: bubblewrap makes a user namespace (``--disable-userns`` inside it).

Where a cgroup hierarchy is writable, each worker gets its own pids and memory cgroup
(and, on v1, a ``cpuacct`` one): the launch plan reads the worker's memory in use and
CPU time from it, for the supervisor's watch.
The worker moves itself in as its first step in the jail, through fds the host opened
(:mod:`mcphost.sandbox.landlock`), and checks it before any plugin code runs; on kernels
older than 5.16 the move happens between fork and exec instead. The same first step
applies Landlock where the kernel has it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable

import msgspec

from mcphost.sdk.errors import ConfigError

from .cgroups import CgroupManager, WorkerCgroup
from .isolation import (
    IsolationBackend,
    IsolationReport,
    LaunchPlan,
    WorkerSpec,
    clean_env,
    runtime_paths,
    worker_argv,
    worker_config,
)
from .landlock import BOOTSTRAP, JailStart, abi_version, rules_for
from .layout import APP, DATA, HOME, inside, mount_args, overlaps, top_dir_args
from .reaper import Jail, set_subreaper
from .seccomp import SeccompUnavailable, filter_fd, filter_program, seccomp_status

__all__ = ["NOBODY", "BubblewrapBackend", "code_paths", "exit_status"]

#: The uid and gid a worker runs as when the host is root, unless configured otherwise.
NOBODY = 65534

_TRUE = shutil.which("true", path="/usr/bin:/bin") or "/bin/true"


class BubblewrapBackend(IsolationBackend):
    """Runs each worker inside a bubblewrap jail (see the module docstring)."""

    name = "bwrap"
    level = "namespaces"

    def __init__(
        self,
        *,
        bwrap: str | None = None,
        uid: int = NOBODY,
        gid: int | None = None,
        use_seccomp: bool = True,
        use_cgroups: bool = True,
        use_landlock: bool = True,
    ) -> None:
        self.bwrap = bwrap or shutil.which("bwrap") or "bwrap"
        self.uid = uid
        self.gid = uid if gid is None else gid
        self.use_seccomp = use_seccomp
        self.use_cgroups = use_cgroups
        self.use_landlock = use_landlock
        self.setpriv = shutil.which("setpriv")
        self._available: tuple[bool, str] | None = None
        self._version: tuple[int, ...] | None = None
        self._cgroups: CgroupManager | None = None

    # -- what runs here ------------------------------------------------------------
    @property
    def privileged(self) -> bool:
        """True when the host is root and workers are dropped to :attr:`uid`."""
        return os.geteuid() == 0 and self.setpriv is not None

    def version(self) -> tuple[int, ...]:
        """The installed bubblewrap's version, ``()`` when it cannot be run."""
        if self._version is None:
            try:
                out = subprocess.run(
                    [self.bwrap, "--version"], capture_output=True, text=True, timeout=10
                ).stdout
            except (OSError, subprocess.TimeoutExpired):
                out = ""
            m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
            self._version = tuple(int(g or 0) for g in m.groups()) if m else ()
        return self._version

    def cgroups(self) -> CgroupManager | None:
        """The cgroup hierarchy workers are placed in, ``None`` when not used."""
        if not self.use_cgroups:
            return None
        if self._cgroups is None:
            self._cgroups = CgroupManager.detect()
        return self._cgroups if self._cgroups.version else None

    def available(self) -> tuple[bool, str]:
        if self._available is None:
            # One probe per process and setup: every backend instance shares the answer.
            key = (self.bwrap, self.privileged, os.geteuid())
            if key not in _PROBED:
                _PROBED[key] = self._probe()
            self._available = _PROBED[key]
        return self._available

    def _probe(self) -> tuple[bool, str]:
        if not os.path.exists(self.bwrap) and shutil.which(self.bwrap) is None:
            return False, "the bwrap binary is not installed (apt install bubblewrap)"
        if not self.version():
            return False, f"{self.bwrap} --version does not run"
        # bubblewrap exits without reaping the jail's init: it falls to the nearest
        # subreaper. Be that subreaper, and let the jail thread reap it.
        set_subreaper()
        info_read, info_write = os.pipe()
        argv = [self.bwrap, *self._namespace_args(network=False), "--info-fd", str(info_write)]
        argv += ["--ro-bind", "/usr", "/usr", *top_dir_args()]
        argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", "1048576"]
        argv += ["--tmpfs", "/tmp", "--", *self._drop_args(), _TRUE]
        jail = Jail(argv, info_read, [info_write], None)
        try:
            probe = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                pass_fds=(info_write,),
            )
            jail.on_spawn(probe.pid)
            try:
                _, stderr = probe.communicate(timeout=20)
            except subprocess.TimeoutExpired as exc:
                probe.kill()
                probe.wait()
                return False, f"a trivial sandbox did not run: {exc}"
        except OSError as exc:
            return False, f"a trivial sandbox did not run: {exc}"
        finally:
            jail.cleanup()
        if probe.returncode != 0:
            err = stderr.strip() or f"exit status {probe.returncode}"
            return False, (
                f"a trivial sandbox failed here ({err}); user namespaces may be disabled "
                "(sysctl user.max_user_namespaces) or the host lacks privileges"
            )
        return True, f"bubblewrap {'.'.join(map(str, self.version()))} runs"

    def report(self) -> IsolationReport:
        ok, why = self.available()
        layers: dict[str, str] = {}
        warnings: list[str] = []
        if not ok:
            return IsolationReport(self.name, self.level, False, {}, [why])
        namespaces = "mount, pid, ipc, uts, cgroup, network (unless granted)"
        if self.privileged:
            layers["namespaces"] = namespaces
            layers["user"] = (
                f"runs as uid {self.uid} gid {self.gid} with no capabilities "
                "(empty bounding set, no_new_privs)"
            )
        else:
            layers["namespaces"] = namespaces + ", user"
            layers["user"] = "host uid mapped in a user namespace, no capabilities"
            if os.geteuid() == 0:
                warnings.append(
                    "setpriv (util-linux) is missing: workers keep uid 0 inside a user "
                    "namespace; install util-linux to drop them to an unprivileged uid"
                )
        layers["filesystem"] = (
            f"read-only interpreter, stdlib, site-packages, mcphost, and plugin code at {APP}; "
            f"data directory at {DATA}; private size-limited /tmp and scratch directory "
            f"({HOME}, $HOME, tmpfs); minimal /dev; own /proc; writable: data, scratch and "
            "/tmp only; no home, no repository; bubblewrap's options passed on an fd"
        )
        layers["environment"] = "cleared; only PATH, LANG, HOME, TMPDIR and granted variables"
        layers["file descriptors"] = "only the IPC channel is inherited"
        sc_ok, sc_why = (
            seccomp_status() if self.use_seccomp else (False, "seccomp: disabled by the host")
        )
        layers["seccomp"] = sc_why
        if not sc_ok:
            warnings.append(sc_why)
        nested = []
        if not self.privileged and self._supports_disable_userns():
            nested.append("disabled by bwrap --disable-userns")
        elif not self.privileged:
            warnings.append(
                f"bubblewrap {'.'.join(map(str, self.version()))} has no --disable-userns "
                "(0.8+); nested user namespaces are refused by seccomp only"
            )
        if sc_ok:
            nested.append("refused by seccomp (CLONE_NEWUSER)")
        if nested:
            layers["nested user namespaces"] = "; ".join(nested)
        else:
            warnings.append("a worker may create nested user namespaces: no seccomp filter")
        cg = self.cgroups()
        if cg is not None:
            layers["cgroups"] = (
                cg.describe() + "; one pids and memory cgroup per worker (and cpuacct on v1), "
                "entered and checked before plugin code runs; the host watches the "
                "worker's memory in use and CPU time through it"
            )
        else:
            reason = "disabled" if not self.use_cgroups else CgroupManager.detect().describe()
            layers["cgroups"] = reason
            if os.geteuid() == 0:
                warnings.append(
                    "no writable cgroup hierarchy: the process limit (RLIMIT_NPROC) does not "
                    "bind root-started workers as strictly; memory is bounded by RLIMIT_AS only"
                )
        abi = self.landlock_abi()
        if abi:
            net = ", TCP connect only to granted ports" if abi >= 4 else ""
            scope = ", no signals or abstract sockets beyond the worker" if abi >= 6 else ""
            layers["landlock"] = (
                f"ABI {abi}: read-only code, writes only to data, scratch, /tmp and granted "
                f"paths{net}{scope}"
            )
        else:
            layers["landlock"] = "disabled" if not self.use_landlock else "unavailable (kernel)"
        layers["rlimits"] = "address space, CPU seconds, open files, file size, no core dumps"
        warnings.append(
            "a network grant opens the network namespace: host names in host:port entries "
            "are not enforced" + (" (ports are, by Landlock)" if abi >= 4 else ", nor are ports")
        )
        return IsolationReport(self.name, self.level, True, layers, warnings)

    def ready(self) -> None:
        """Build the seccomp filter (once per process: finding libseccomp runs
        ``ldconfig -p`` twice), beside the host's other set-up instead of in the first
        launch plan; where it cannot be built the plan says so, as before."""
        if self.use_seccomp:
            with contextlib.suppress(SeccompUnavailable):
                filter_program()

    # -- the launch plan -----------------------------------------------------------
    def prepare(
        self, spec: WorkerSpec, channel_fd: int, *, command: list[str] | None = None
    ) -> LaunchPlan:
        """The jail for ``spec``; ``command`` replaces the worker (tests run probes).

        bubblewrap reads its options from an fd (``--args``): its command line, which
        every process in the jail can read as ``/proc/1/cmdline``, holds only the
        worker's own command, and that names the jail's paths, not the host's.
        """
        system = code_paths() + ([self.setpriv] if self.setpriv else [])
        clash = overlaps(spec, system)
        if clash:
            raise ConfigError(
                f"{spec.plugin}: {clash} overlaps the jail's own {APP}, {DATA} or "
                f"{HOME}; grant (or install into) a path outside them"
            )
        cg_manager = self.cgroups()
        cgroup: WorkerCgroup | None = None
        worker_spec = spec
        if cg_manager is not None:
            cgroup = cg_manager.create(
                f"{spec.plugin}-{spec.version}", spec.limits.processes, spec.limits.memory_mb
            )
            if cg_manager.v1_parents.get("pids") or cg_manager.v2_parent:
                # The pids cgroup counts this worker alone; RLIMIT_NPROC would count every
                # process of the shared worker uid on the machine.
                worker_spec = msgspec.structs.replace(
                    spec, limits=msgspec.structs.replace(spec.limits, processes=None)
                )
        fds: list[int] = []
        host_fds: list[int] = []
        try:
            # A killed bubblewrap leaves the jail's init to the nearest subreaper: the host.
            set_subreaper()
            if self.privileged:
                _give_to(spec.data_dir, self.uid, self.gid, recursive=True)
            env = clean_env({"HOME": HOME, "TMPDIR": "/tmp"}, passthrough=spec.grants.env)
            args = self._namespace_args(network=spec.grants.network is not None)
            args += ["--clearenv"]
            for key, value in env.items():
                args += ["--setenv", key, value]
            args += mount_args(spec, system)
            args += ["--chdir", HOME]
            if self.use_seccomp:
                with contextlib.suppress(SeccompUnavailable):
                    fds.append(filter_fd())
                    args += ["--seccomp", str(fds[-1])]
            info_read, info_write = os.pipe()
            host_fds.append(info_read)
            fds.append(info_write)
            args += ["--info-fd", str(info_write)]
            start = JailStart()
            preexec: Callable[[], None] | None = None
            cgroup_fds: list[int] = []
            if cgroup is not None:
                start = JailStart(cgroup=cgroup.name, cgroups=len(cgroup.dirs))
                if _open_time_credentials():
                    cgroup_fds = cgroup.open_procs()
                    fds += cgroup_fds
                else:
                    preexec = cgroup.join
            jailed = inside(worker_spec)
            if self.landlock_abi():
                rules = rules_for(
                    [*code_paths(), *jailed.paths, *spec.grants.read_paths],
                    [jailed.data_dir, jailed.work_dir, *spec.grants.write_paths],
                    spec.grants.network,
                )
                start = msgspec.structs.replace(start, landlock=rules)
            fds.append(_args_fd(args))
            # The token tells this jail's processes from every other's (the jail thread
            # finds a lost jail by its command line); unsetting an unset name does nothing.
            argv = [self.bwrap, "--args", str(fds[-1]), "--unsetenv", _token()]
            argv += ["--", *self._drop_args()]
            argv += _command(jailed, channel_fd, command, start, cgroup_fds)
        except BaseException:
            for fd in fds + host_fds:
                os.close(fd)
            if cgroup is not None:
                cgroup.remove()
            raise
        jail = Jail(argv, info_read, fds, cgroup)
        return LaunchPlan(
            argv=argv,
            env=env,
            cwd=spec.work_dir,
            pass_fds=(channel_fd, *fds),
            preexec_fn=preexec,
            on_spawn=jail.on_spawn,
            cleanup=jail.cleanup,
            usage=jail.usage if cgroup is not None else None,
            exit_status=exit_status,
            oom_kills=cgroup.oom_kills if cgroup is not None else None,
        )

    def landlock_abi(self) -> int:
        """The Landlock ABI workers restrict themselves with; 0 when not used."""
        return abi_version() if self.use_landlock else 0

    def _supports_disable_userns(self) -> bool:
        return self.version() >= (0, 8)

    def _namespace_args(self, *, network: bool) -> list[str]:
        argv: list[str] = []
        if self.privileged:
            # No user namespace: uid 65534 must be a real uid, not one mapped onto root.
            argv += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
            if not network:
                argv += ["--unshare-net"]
        else:
            argv += ["--unshare-all", "--unshare-user"]
            if network:
                argv += ["--share-net"]
            if self._supports_disable_userns():
                argv += ["--disable-userns"]
        argv += ["--die-with-parent", "--new-session", "--hostname", "mcphost", "--cap-drop", "ALL"]
        if self.privileged:
            # setpriv needs these for the uid change; it leaves none behind.
            argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
            argv += ["--cap-add", "CAP_SETPCAP"]
        return argv

    def _drop_args(self) -> list[str]:
        if not self.privileged:
            return []
        return [
            str(self.setpriv),
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ]


def _command(
    spec: WorkerSpec,
    channel_fd: int,
    command: list[str] | None,
    start: JailStart,
    cgroup_fds: list[int],
) -> list[str]:
    """The worker's command, started through the jail's first steps when there are any."""
    if start == JailStart():
        return command if command is not None else worker_argv(spec, channel_fd)
    head = [sys.executable, "-I", "-B", "-c", BOOTSTRAP, ",".join(map(str, cgroup_fds))]
    if command is not None:
        return [*head, "--exec", msgspec.json.encode(start).decode(), "--", *command]
    return [*head, worker_config(spec, channel_fd, jail=msgspec.to_builtins(start))]


def _args_fd(args: list[str]) -> int:
    """A memory file holding ``args`` NUL-separated, read from its start by ``--args``."""
    fd = os.memfd_create("bwrap-args", os.MFD_CLOEXEC)
    try:
        os.write(fd, b"".join(os.fsencode(a) + b"\0" for a in args))
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _token() -> str:
    return f"MCPHOST_JAIL_{secrets.token_hex(8)}"


def exit_status(returncode: int) -> int:
    """The worker's own exit status from bubblewrap's: a worker killed by signal N makes
    bubblewrap exit with 128 + N, which this turns back into -N (as for a direct child)."""
    if 128 < returncode <= 128 + signal.SIGRTMAX:
        return -(returncode - 128)
    return returncode


def _open_time_credentials() -> bool:
    """Linux 5.16+ checks a cgroup move against the opener of ``cgroup.procs``."""
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return m is not None and (int(m[1]), int(m[2])) >= (5, 16)


def code_paths() -> list[str]:
    """Everything a jailed worker reads its code from, besides the plugin's own paths."""
    return [*runtime_paths(), *_link_targets()]


@functools.cache
def _link_targets() -> list[str]:
    """Folders that mcphost's own files link to.

    A strict editable install (``editable_mode=strict``) makes the package a tree of
    symlinks into the source checkout; the jail needs the targets, not only the links.
    """
    import mcphost.sandbox
    import mcphost.sdk

    out: set[str] = set()
    for pkg in (mcphost.sdk, mcphost.sandbox):
        for root in pkg.__path__:
            for dirpath, _, files in os.walk(root):
                for name in files:
                    p = os.path.join(dirpath, name)
                    if os.path.islink(p):
                        out.add(os.path.dirname(os.path.realpath(p)))
    return sorted(out)


def _give_to(path: str, uid: int, gid: int, *, recursive: bool) -> None:
    """Make ``path`` (and what is in it) owned by the worker's uid."""
    os.makedirs(path, exist_ok=True)
    os.chown(path, uid, gid)
    if not recursive:
        return
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            # A hard link may be a host file a worker linked in: never give that away.
            if (st.st_uid != uid or st.st_gid != gid) and (
                stat.S_ISDIR(st.st_mode) or st.st_nlink == 1
            ):
                os.lchown(p, uid, gid)


_PROBED: dict[tuple[str, bool, int], tuple[bool, str]] = {}
