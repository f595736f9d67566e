"""mcphost.host.pool: the workers of one plugin version.

:class:`WorkerPool` runs several replicas of a plugin behind the face of one supervisor;
:func:`make_supervisor` gives a plain supervisor for one replica and a pool for more.
"""

from __future__ import annotations

from ..sources import PluginSource
from ..supervisor import PluginSupervisor, SupervisorEnv
from .pool import WorkerPool

__all__ = ["Supervised", "WorkerPool", "make_supervisor"]

#: What the host keeps per plugin: one supervisor, or a pool of them.
Supervised = PluginSupervisor | WorkerPool


def make_supervisor(source: PluginSource, env: SupervisorEnv, replicas: int) -> Supervised:
    """A supervisor of ``source``'s worker, or a pool of ``replicas`` of them."""
    if replicas <= 1:
        return PluginSupervisor(source, env)
    return WorkerPool(source, env, replicas)
