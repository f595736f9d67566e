"""Several workers of one plugin version behind the face of one.

A :class:`WorkerPool` holds ``replicas`` :class:`~mcphost.host.supervisor.PluginSupervisor`
s of the same source, each keeping its own worker running under the same supervision
rules (a crashed replica restarts while the others serve). It offers what the host uses
of a supervisor (``worker``, ``acquire``, ``swap``, ``stop``, ``reset``, ``stats`` ...),
so the host never asks how many workers a plugin has. A call goes to the less loaded of
two replicas picked at random (the power of two choices, on calls in flight): close to
the least loaded of all, at the cost of two looks. A swap replaces the replicas one
after the other, each the way a single worker is swapped (start, switch, drain), so no
call fails; if a replica cannot start the new version, those already swapped go back.
Replicas share the plugin's data directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from typing import Any

from mcphost.sandbox.client import WorkerClient
from mcphost.sdk.schema import ToolSpec

from ..sources import PluginSource
from ..supervisor import PluginSupervisor, SupervisorEnv

__all__ = ["WorkerPool"]

#: A keyed call stays on its key's replica while that replica, with the call, carries at
#: most this many times the pool's mean load (calls in flight): consistent hashing with
#: bounded loads.
LOAD_BOUND = 1.25

#: A pool's state is the most hopeful of its replicas' states.
_STATE_ORDER = ("running", "starting", "restarting", "stopped", "refused", "failed")


class WorkerPool:
    """``replicas`` workers of one plugin version, used as one."""

    def __init__(self, source: PluginSource, env: SupervisorEnv, replicas: int) -> None:
        if replicas < 1:
            raise ValueError("a pool has at least one replica")
        self.env = env
        self.replicas = [PluginSupervisor(source, env) for _ in range(replicas)]
        self._pick = random.Random()

    # -- what the host reads -------------------------------------------------------
    @property
    def name(self) -> str:
        return self.replicas[0].name

    @property
    def source(self) -> PluginSource:
        return self.replicas[0].source

    @property
    def tools(self) -> list[ToolSpec]:
        for r in self.replicas:
            if r.worker is not None:
                return r.tools
        return self.replicas[0].tools

    @property
    def state(self) -> str:
        states = {r.state for r in self.replicas}
        return next((s for s in _STATE_ORDER if s in states), self.replicas[0].state)

    @property
    def failure(self) -> str | None:
        return next((r.failure for r in self.replicas if r.failure), None)

    @property
    def restarts(self) -> int:
        return sum(r.restarts for r in self.replicas)

    @property
    def route_token(self) -> object:
        """Changes when the tools offered may have changed (the first replica's worker
        is replaced: every swap replaces it)."""
        return self.replicas[0].worker

    @property
    def worker(self) -> WorkerClient | None:
        """A running worker to call: the less busy of two picked at random."""
        live = [r.worker for r in self.replicas if r.worker is not None and r.worker.alive]
        if len(live) <= 1:
            return live[0] if live else None
        a, b = self._pick.sample(live, 2)
        return a if a.inflight <= b.inflight else b

    def worker_for(self, key: str) -> WorkerClient | None:
        """The running worker for calls with ``key`` (a batch key): rendezvous hashing
        ranks the replicas for the key, and the first whose load allows takes it (its
        calls in flight plus this one within :data:`LOAD_BOUND` times the pool's mean).
        So a key keeps to one replica, and per-key caches there stay warm, until that
        replica is overloaded or goes away; then only its keys move."""
        ranked: list[tuple[int, WorkerClient]] = []
        for i, r in enumerate(self.replicas):
            w = r.worker
            if w is not None and w.alive:
                ranked.append((_rank(key, i), w))
        if len(ranked) <= 1:
            return ranked[0][1] if ranked else None
        ranked.sort(key=lambda rw: rw[0], reverse=True)
        total = sum(w.inflight for _, w in ranked)
        bound = math.ceil(LOAD_BOUND * (total + 1) / len(ranked))
        for _, w in ranked:
            if w.inflight + 1 <= bound:
                return w
        return min((w for _, w in ranked), key=lambda w: w.inflight)  # pragma: no cover

    def call_info(self, call_id: int) -> tuple[str, str]:
        """The tool and trace context of a call by id, if one replica knows it (ids are
        per worker: another replica's call of the same id may answer instead)."""
        for r in self.replicas:
            if r.worker is not None:
                tool, trace = r.worker.call_info(call_id)
                if tool:
                    return tool, trace
        return "", ""

    # -- what the host does --------------------------------------------------------
    async def acquire(self) -> WorkerClient:
        """A running worker, starting every replica that has none; returns as soon as
        one runs (the others go on starting). Fails only when every replica fails."""
        w = self.worker
        if w is not None:
            return w
        starts = [asyncio.ensure_future(r.acquire()) for r in self.replicas]
        pending: set[asyncio.Future[WorkerClient]] = set(starts)
        first_error: BaseException | None = None
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None:
                    for other in pending:
                        other.add_done_callback(_consume)
                    return task.result()
                first_error = first_error or task.exception()
        assert first_error is not None
        raise first_error

    async def swap(self, source: PluginSource, drain_timeout: float) -> WorkerClient:
        """Swap every replica to ``source``, one after the other; all or none."""
        old = self.source
        swapped: list[PluginSupervisor] = []
        first: WorkerClient | None = None
        for r in self.replicas:
            try:
                w = await r.swap(source, drain_timeout)
            except BaseException:
                for done in swapped:  # back to the version they served
                    try:
                        await done.swap(old, drain_timeout)
                    except Exception:
                        done.stop_worker(f"could not go back to {old.label} after a failed swap")
                raise
            swapped.append(r)
            first = first or w
        assert first is not None
        return first

    def stop_worker(self, reason: str) -> None:
        for r in self.replicas:
            r.stop_worker(reason)

    def reset(self) -> None:
        for r in self.replicas:
            r.reset()

    async def drain(self, timeout: float) -> None:
        """Until no replica has a call in flight, or ``timeout`` passes."""
        workers = [r.worker for r in self.replicas if r.worker is not None]
        await asyncio.gather(*(w.drain(timeout) for w in workers))

    async def stop(self, grace: float = 2.0) -> None:
        await asyncio.gather(*(r.stop(grace) for r in self.replicas), return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        """The pool as one (sums over replicas) and each replica under ``replicas``."""
        each = [r.stats() for r in self.replicas]
        out: dict[str, Any] = {
            "plugin": self.name,
            "version": self.source.version,
            "state": self.state,
            "restarts": self.restarts,
            "failure": self.failure,
            "pid": next((s["pid"] for s in each if s.get("pid")), None),
            "replaced": sum(s.get("replaced", 0) for s in each),
        }
        for key, digits in (("memory_mb", 1), ("cpu_seconds", 3)):
            values = [s[key] for s in each if key in s]
            if values:
                out[key] = round(sum(values), digits)
        for key in ("inflight", "calls", "stuck"):
            values = [s[key] for s in each if key in s]
            if values:
                out[key] = sum(values)
        out["replicas"] = each
        return out


def _rank(key: str, replica: int) -> int:
    """Replica ``replica``'s weight for ``key`` (rendezvous hashing): stable across
    processes and runs, so the same key prefers the same replica."""
    digest = hashlib.blake2b(f"{replica}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
