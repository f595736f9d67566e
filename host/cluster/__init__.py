"""mcphost.host.cluster: plugin workers on other machines (docs/cluster.md).

A plugin with ``placement = "ray"`` in ``[plugins.NAME]`` runs its workers (all of its
replicas, or ``ray_replicas`` of them) on the Ray cluster of ``[cluster]``, each hosted
by a Ray actor on its node (:mod:`.node`); the host follows each as a replica of the
plugin's pool (:mod:`.ray_host`). Ray is imported only when such a plugin starts.
"""

from __future__ import annotations

from ..config import PluginSettings
from ..home import Home
from ..pool import Supervised, WorkerPool
from ..sources import PluginSource
from ..supervisor import PluginSupervisor
from ..supervisor_env import SupervisorEnv

__all__ = ["make_cluster_supervisor"]


def make_cluster_supervisor(
    source: PluginSource, env: SupervisorEnv, settings: PluginSettings, home: Home
) -> Supervised:
    """The supervisor of a plugin placed on Ray: one remote replica, or a pool whose
    first ``ray_replicas`` replicas run on Ray and the others here."""
    from .ray_host import RayReplica

    count = settings.replicas or 1
    remote = count if settings.ray_replicas is None else settings.ray_replicas
    replicas: list[PluginSupervisor] = [
        RayReplica(source, env, settings, home) if i < remote else PluginSupervisor(source, env)
        for i in range(count)
    ]
    if len(replicas) == 1:
        return replicas[0]
    return WorkerPool(source, env, count, members=replicas)
