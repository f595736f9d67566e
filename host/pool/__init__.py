"""mcphost.host.pool: the workers of one plugin version.

:class:`WorkerPool` runs several replicas of a plugin behind the face of one supervisor;
:func:`make_supervisor` gives a plain supervisor for one replica and a pool for more;
:mod:`.scaling` decides how many replicas a scaling pool runs.
"""

from __future__ import annotations

from ..sources import PluginSource
from ..supervisor import PluginSupervisor, SupervisorEnv
from .pool import WorkerPool
from .scaling import ScalingPolicy

__all__ = ["ScalingPolicy", "Supervised", "WorkerPool", "make_supervisor", "reconfigure"]

#: What the host keeps per plugin: one supervisor, or a pool of them.
Supervised = PluginSupervisor | WorkerPool


def make_supervisor(
    source: PluginSource, env: SupervisorEnv, replicas: int | ScalingPolicy
) -> Supervised:
    """A supervisor of ``source``'s worker, or a pool of ``replicas`` of them (a count,
    or a policy: a pool that may run more than one replica)."""
    most = replicas.max_replicas if isinstance(replicas, ScalingPolicy) else replicas
    if most <= 1:
        return PluginSupervisor(source, env)
    return WorkerPool(source, env, replicas)


def reconfigure(sup: Supervised, policy: ScalingPolicy) -> Supervised:
    """``sup`` following ``policy`` (the configuration changed while it runs): a pool
    takes the new policy; a single worker that may now have company becomes the first
    replica of a pool (its worker goes on serving). A pool asked for one replica stays
    a pool and shrinks to it."""
    if isinstance(sup, WorkerPool):
        sup.configure(policy)
        return sup
    if policy.max_replicas <= 1:
        return sup
    pool = WorkerPool(sup.source, sup.env, policy, first=sup)
    if sup.worker is not None:
        pool.start_scaling()
    return pool
