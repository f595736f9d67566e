"""mcphost.sandbox: the process boundary: wire protocol, worker, isolation backends."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .isolation import Grants, IsolationBackend, IsolationReport, LaunchPlan, Limits, WorkerSpec
from .jail import RlimitBackend, available_backends, choose_backend
from .protocol import PROTOCOL_VERSION, SUPPORTED_VERSIONS, Frame, FrameCodec

if TYPE_CHECKING:
    from .client import WorkerClient, spawn_worker

__all__ = [
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Frame",
    "FrameCodec",
    "Grants",
    "IsolationBackend",
    "IsolationReport",
    "LaunchPlan",
    "Limits",
    "RlimitBackend",
    "WorkerClient",
    "WorkerSpec",
    "available_backends",
    "choose_backend",
    "spawn_worker",
]


def __getattr__(name: str) -> Any:
    # The host's side of a worker (subprocess, shutil, logging set-up) is imported on
    # first use: a worker imports this package too, and never needs it.
    if name in ("WorkerClient", "spawn_worker"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
