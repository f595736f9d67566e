"""mcphost.sandbox: the process boundary: wire protocol, worker, isolation backends."""

from .client import WorkerClient, spawn_worker
from .isolation import Grants, IsolationBackend, IsolationReport, LaunchPlan, Limits, WorkerSpec
from .jail import RlimitBackend, available_backends, choose_backend
from .protocol import PROTOCOL_VERSION, SUPPORTED_VERSIONS, Frame, FrameCodec

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
