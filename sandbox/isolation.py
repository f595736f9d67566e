"""The isolation-backend interface: how a worker process is fenced in.

A backend turns a :class:`WorkerSpec` (which plugin, which files, which limits and
grants) into a :class:`LaunchPlan` (argv, environment, fds, a pre-exec step) and reports
what it enforces. The supervisor never branches on which backend it has.
"""

from __future__ import annotations

import abc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

__all__ = [
    "Grants",
    "IsolationBackend",
    "IsolationReport",
    "LaunchPlan",
    "Limits",
    "ResourceUsage",
    "WorkerSpec",
    "clean_env",
    "runtime_paths",
    "worker_argv",
    "worker_config",
    "write_worker_bytecode",
]


class Limits(msgspec.Struct, frozen=True, omit_defaults=True):
    """Resource limits for one worker; ``None`` means not limited."""

    #: Address space, and the RSS the supervisor allows, in MiB.
    memory_mb: int | None = 1024
    #: CPU seconds for the worker's whole life (SIGXCPU, then SIGKILL).
    cpu_seconds: int | None = 600
    open_files: int | None = 256
    processes: int | None = 64
    #: Largest file the worker may write, in MiB.
    file_size_mb: int | None = 256
    #: Size of the private /tmp where the backend can bound it, in MiB.
    tmp_mb: int | None = 64


class Grants(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a plugin was granted beyond the default nothing."""

    #: ``None``: no network. Otherwise the ``host:port`` entries allowed ("*" for any).
    network: list[str] | None = None
    read_paths: list[str] = []
    write_paths: list[str] = []
    #: Names of host environment variables passed through to the worker.
    env: list[str] = []


class WorkerSpec(msgspec.Struct, frozen=True):
    """Everything needed to start one worker for one plugin version."""

    plugin: str
    version: str
    #: ``module:attribute`` of the plugin's :class:`mcphost.sdk.Plugin` object.
    entry: str
    #: Directories put first on the worker's ``sys.path`` (the plugin's code).
    paths: list[str]
    #: The plugin's private, writable, persistent data directory.
    data_dir: str
    #: A scratch directory the worker runs in; removed when the worker ends.
    work_dir: str
    limits: Limits = Limits()
    grants: Grants = Grants()
    max_frame: int = 16 * 1024 * 1024
    threads: int = 8


class ResourceUsage(msgspec.Struct, frozen=True):
    """What a worker uses, counted for all its processes together; ``None``: not known."""

    #: Bytes of memory held, each page counted once (shared pages are not summed twice).
    memory: int | None = None
    #: What ``memory`` counts: ``"cgroup"`` (the kernel's charge to the worker's cgroup),
    #: ``"pss"`` (proportional set size of its process tree) or ``"rss"`` (resident set
    #: size where a page map could not be read: an upper bound).
    memory_source: str | None = None
    #: CPU seconds used so far by the worker and every process it ever started.
    cpu_seconds: float | None = None


class LaunchPlan(msgspec.Struct):
    """How to spawn the worker: what the supervisor passes to the process spawner."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    #: fds the child inherits (at the same numbers); everything else is closed.
    pass_fds: tuple[int, ...] = ()
    #: Runs in the child between fork and exec (rlimits, cgroup join, uid drop).
    preexec_fn: Callable[[], None] | None = None
    #: Called with the child's pid right after spawn (e.g. to reap or account it).
    on_spawn: Callable[[int], None] | None = None
    #: Called once the worker has exited (or could not be spawned), to release what the
    #: backend set up; a second call does nothing.
    cleanup: Callable[[], None] | None = None
    #: Reads the worker's use of memory and CPU as the kernel accounts it for the whole
    #: worker (e.g. its cgroup); ``None`` when the backend cannot tell.
    usage: Callable[[], ResourceUsage] | None = None
    #: Maps the spawned process's exit status to the worker's own, as ``returncode``
    #: reports it for a direct child (negative: killed by that signal); ``None``: same.
    exit_status: Callable[[int], int] | None = None
    #: How many of the worker's processes the kernel's out-of-memory killer ended (e.g.
    #: in its memory cgroup); ``None`` when the backend cannot tell.
    oom_kills: Callable[[], int] | None = None


class IsolationReport(msgspec.Struct, frozen=True):
    """What a backend enforces, as ``mcphost doctor`` shows it."""

    backend: str
    #: "rlimits" (process limits only) or "namespaces" (a jail with its own mounts).
    level: str
    available: bool
    #: Layer name -> what it does here, e.g. {"rlimits": "address space, cpu, ..."}.
    layers: dict[str, str] = {}
    warnings: list[str] = []


class IsolationBackend(abc.ABC):
    """Builds a worker's launch plan and says what it enforces."""

    name: str = "abstract"
    level: str = "rlimits"

    @abc.abstractmethod
    def available(self) -> tuple[bool, str]:
        """Whether this backend can run here, and why not when it cannot."""

    @abc.abstractmethod
    def report(self) -> IsolationReport:
        """What this backend enforces on this machine."""

    @abc.abstractmethod
    def prepare(self, spec: WorkerSpec, channel_fd: int) -> LaunchPlan:
        """The launch plan for ``spec``; the worker talks to the host on ``channel_fd``."""

    def ready(self) -> None:
        """Make now, once per process, what every launch plan needs (nothing by
        default): the host calls it where it chooses the backend, on a thread, so the
        first worker start does not wait for it."""
        return None


def clean_env(
    extra: dict[str, str] | None = None, passthrough: list[str] | None = None
) -> dict[str, str]:
    """A minimal environment: no host secrets, only what Python needs and what was granted."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    # The host's choice of event loop (mcphost.sandbox.loops) holds for its workers too.
    if "MCPHOST_LOOP" in os.environ:
        env["MCPHOST_LOOP"] = os.environ["MCPHOST_LOOP"]
    for name in passthrough or []:
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(extra or {})
    return env


def worker_config(spec: WorkerSpec, channel_fd: int, **overrides: Any) -> str:
    """The JSON the worker reads from its command line."""
    cfg: dict[str, Any] = {
        "fd": channel_fd,
        "plugin": spec.plugin,
        "version": spec.version,
        "entry": spec.entry,
        "paths": spec.paths,
        "data_dir": spec.data_dir,
        "limits": msgspec.to_builtins(spec.limits),
        "max_frame": spec.max_frame,
        "threads": spec.threads,
    }
    cfg.update(overrides)
    return msgspec.json.encode(cfg).decode()


def runtime_paths() -> list[str]:
    """Directories a worker must see read-only: the interpreter and mcphost's own code.

    An editable install maps ``mcphost.<name>`` to source folders, so those are listed
    too; a jail binds all of these read-only.
    """
    import mcphost.sandbox as _sb
    import mcphost.sdk as _sdk

    out = {sys.base_prefix, sys.prefix}
    for mod in (_sdk, _sb):
        out.update(str(Path(p).resolve()) for p in mod.__path__)
    import msgspec as _m

    out.add(str(Path(_m.__file__ or ".").resolve().parent.parent))
    return sorted(out)


_BYTECODE_WRITTEN = False


def write_worker_bytecode() -> None:
    """Write the bytecode of the code every worker imports first (``mcphost.sdk`` and
    ``mcphost.sandbox``) where Python keeps it, for the files whose bytecode is missing
    or older than the file; once per process.

    Workers run with ``-B`` (they never write bytecode: their code is read-only to
    them), and the host imports only part of these modules itself, so a worker-only
    module (the worker loop, its I/O, its thread pool) would otherwise be compiled from
    source by every worker that starts (about 10-15 ms of a jailed worker's ~70 ms
    start, measured with a development install). This is the host's own
    code, compiled into its own install's ``__pycache__`` by the host, as the host's
    imports do for the modules they load; a worker only reads it, read-only, and
    Python still checks each file's bytecode against the source's size and mtime.
    Skipped when the host itself writes no bytecode (``-B``,
    ``PYTHONDONTWRITEBYTECODE``).
    """
    global _BYTECODE_WRITTEN
    if _BYTECODE_WRITTEN or sys.dont_write_bytecode:
        return
    _BYTECODE_WRITTEN = True
    import compileall

    import mcphost.sandbox as _sb
    import mcphost.sdk as _sdk

    for pkg in (_sdk, _sb):
        for root in pkg.__path__:
            # Quietly: a file it cannot write (a read-only install) is left as it is.
            compileall.compile_dir(root, quiet=2)


def worker_argv(spec: WorkerSpec, channel_fd: int, python: str | None = None) -> list[str]:
    """The command that runs the worker: isolated mode, no bytecode writes."""
    return [
        python or sys.executable,
        "-I",
        "-B",
        "-m",
        "mcphost.sandbox.worker",
        worker_config(spec, channel_fd),
    ]
