"""Which isolation backend plugins run under, as the configuration's ``isolation`` and
``require_namespaces`` say."""

from __future__ import annotations

from mcphost.sandbox.isolation import IsolationBackend, write_worker_bytecode
from mcphost.sandbox.jail import choose_backend
from mcphost.sdk.errors import ConfigError

from .config import HostConfig

__all__ = ["isolation_backend"]


def isolation_backend(config: HostConfig, override: str | None = None) -> IsolationBackend:
    """The backend plugins run under, refusing when the configuration requires namespaces
    and the chosen backend has none. Every place that starts a worker asks here."""
    # Before the first worker: once per process, a few stat calls when up to date.
    write_worker_bytecode()
    isolation = override or config.isolation
    backend = choose_backend(isolation)
    if config.require_namespaces and backend.level != "namespaces":
        if isolation == "auto":
            why = (
                f"only the {backend.name!r} backend can run here; install bubblewrap "
                "(`apt-get install bubblewrap`)"
            )
        else:
            why = f'isolation = {isolation!r} has none; set isolation = "auto" or "bwrap"'
        raise ConfigError(
            f"the configuration requires namespaces (require_namespaces = true) but {why}, "
            "or set require_namespaces = false; `mcphost doctor` shows what runs here"
        )
    backend.ready()
    return backend
