"""The first isolation layer: a clean process with rlimits, and the backend chooser."""

from __future__ import annotations

from .isolation import (
    IsolationBackend,
    IsolationReport,
    LaunchPlan,
    WorkerSpec,
    clean_env,
    worker_argv,
)

__all__ = ["RlimitBackend", "available_backends", "choose_backend"]


class RlimitBackend(IsolationBackend):
    """A subprocess with a clean environment, only the IPC fd, rlimits, its own cwd.

    The worker applies its :class:`~mcphost.sandbox.isolation.Limits` to itself with
    ``setrlimit`` before it imports any plugin code, so no pre-exec hook is needed.
    """

    name = "rlimits"
    level = "rlimits"

    def available(self) -> tuple[bool, str]:
        return True, "always available"

    def report(self) -> IsolationReport:
        return IsolationReport(
            backend=self.name,
            level=self.level,
            available=True,
            layers={
                "environment": "cleared; only PATH, LANG and granted variables",
                "file descriptors": "only the IPC channel is inherited",
                "rlimits": "address space, CPU seconds, open files, processes, "
                "file size, no core dumps",
                "supervision": "psutil memory readings, pings, restart with backoff",
            },
            warnings=[
                "no namespaces: the plugin can read what the host user can read, "
                "reach the network and sees its directories at the host's paths; "
                "install bubblewrap for a real jail"
            ],
        )

    def prepare(self, spec: WorkerSpec, channel_fd: int) -> LaunchPlan:
        return LaunchPlan(
            argv=worker_argv(spec, channel_fd),
            env=clean_env(passthrough=spec.grants.env),
            cwd=spec.work_dir,
            pass_fds=(channel_fd,),
        )


def available_backends() -> list[IsolationBackend]:
    """Every backend this build knows, strongest first."""
    backends: list[IsolationBackend] = []
    try:
        from .bwrap import BubblewrapBackend
    except ImportError:  # pragma: no cover - the module ships with mcphost
        pass
    else:
        backends.append(BubblewrapBackend())
    backends.append(RlimitBackend())
    return backends


def choose_backend(isolation: str = "auto") -> IsolationBackend:
    """Pick a backend: ``auto`` (the strongest available), ``bwrap`` or ``rlimits``.

    Raises :class:`~mcphost.sdk.errors.ConfigError` when the named one cannot run.
    """
    from mcphost.sdk.errors import ConfigError

    backends = available_backends()
    if isolation == "auto":
        for b in backends:
            if b.available()[0]:
                return b
    for b in backends:
        if b.name == isolation:
            ok, why = b.available()
            if not ok:
                raise ConfigError(
                    f"isolation backend {isolation!r} cannot run here: {why}; "
                    "run `mcphost doctor` to see what is available"
                )
            return b
    names = ", ".join(["auto", *(b.name for b in backends)])
    raise ConfigError(f"unknown isolation backend {isolation!r}; choose one of: {names}")
