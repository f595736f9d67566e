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

A pool with ``min_replicas`` below ``max_replicas`` scales: once it has started, it reads
its load every :data:`~.scaling.INTERVAL` seconds (calls in flight on each worker, calls
queued for its batch tools, calls finished) and a :class:`~.scaling.Scaler` decides the
count; a new replica starts beside the others and takes calls once it runs, a replica
that goes is first taken out of the choice, then stops after its calls drain. Scaling
waits while a swap runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any

from mcphost.sandbox.client import WorkerClient
from mcphost.sdk.schema import ToolSpec

from ..sources import PluginSource
from ..supervisor import PluginSupervisor, SupervisorEnv
from .scaling import INTERVAL, Load, Scaler, ScalingPolicy

__all__ = ["WorkerPool"]

#: A keyed call stays on its key's replica while that replica, with the call, carries at
#: most this many times the pool's mean load (calls in flight): consistent hashing with
#: bounded loads.
LOAD_BOUND = 1.25
log = logging.getLogger("mcphost.pool")

#: A pool's state is the most hopeful of its replicas' states.
_STATE_ORDER = ("running", "starting", "restarting", "stopped", "refused", "failed")


class WorkerPool:
    """``replicas`` workers of one plugin version, used as one: a fixed count, or a
    :class:`~.scaling.ScalingPolicy` the count follows. ``first``: a supervisor already
    running for the plugin, which becomes the first replica (a plugin that starts to
    scale while it runs keeps its worker). ``members``: the replicas, made by the caller
    (a cluster's own, say)."""

    def __init__(
        self,
        source: PluginSource,
        env: SupervisorEnv,
        replicas: int | ScalingPolicy,
        *,
        first: PluginSupervisor | None = None,
        members: list[PluginSupervisor] | None = None,
    ) -> None:
        if isinstance(replicas, int):
            if replicas < 1:
                raise ValueError("a pool has at least one replica")
            replicas = ScalingPolicy(min_replicas=replicas, max_replicas=replicas)
        self.env = env
        self.policy = replicas
        # An adopted supervisor is alone at first: the scaling starts the others.
        if members is not None:  # made by the caller (replicas of a cluster, say)
            self.replicas = list(members)
        elif first is not None:
            self.replicas = [first]
        else:
            self.replicas = [PluginSupervisor(source, env) for _ in range(replicas.min_replicas)]
        #: Each replica's slot: a number it keeps while it lives, which routing by key
        #: hashes, so that a replica's leaving or joining moves only its own keys.
        self._slots = {r: i for i, r in enumerate(self.replicas)}
        self._pick = random.Random()
        #: Calls queued for this pool's batch tools, not yet sent (the host sets it).
        self.queued: Callable[[], int] = _none
        self._scaler = Scaler(replicas)
        self._scaling: asyncio.Task[None] | None = None
        self._swapping = False
        self._closing = False
        #: Replicas taken out of the choice, draining before they stop.
        self._retiring: set[asyncio.Task[None]] = set()
        #: (calls started, calls in flight) of each worker at the last reading.
        self._seen: dict[WorkerClient, tuple[int, int]] = {}
        self.scaled_up = 0
        self.scaled_down = 0
        #: The last change of the count: replicas, why, when (Unix time).
        self.last_scaling: dict[str, Any] | None = None

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
        for r in self.replicas:
            w = r.worker
            if w is not None and w.alive:
                ranked.append((_rank(key, self._slots[r]), w))
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
        one runs (the others go on starting). Fails only when every replica fails.
        The first call also starts the scaling (a pool never used runs no timer)."""
        self.start_scaling()
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
        self._swapping = True  # the count holds still meanwhile
        try:
            for r in list(self.replicas):
                try:
                    w = await r.swap(source, drain_timeout)
                except BaseException:
                    for done in swapped:  # back to the version they served
                        try:
                            await done.swap(old, drain_timeout)
                        except Exception:
                            done.stop_worker(
                                f"could not go back to {old.label} after a failed swap"
                            )
                    raise
                swapped.append(r)
                first = first or w
        finally:
            self._swapping = False
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
        self._closing = True
        if self._scaling is not None:
            self._scaling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scaling
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await asyncio.gather(*(r.stop(grace) for r in self.replicas), return_exceptions=True)

    # -- scaling -------------------------------------------------------------------
    def configure(self, policy: ScalingPolicy) -> None:
        """Follow ``policy`` from the next reading on (the configuration reload)."""
        self.policy = policy
        self._scaler.policy = policy

    def start_scaling(self) -> None:
        """Read the load from now on (once; on the running loop)."""
        if self._scaling is None and not self._closing:
            self._scaling = asyncio.ensure_future(self._follow_load())

    def read_load(self, now: float) -> Load:
        """This pool's load now; calls finished are counted since the last reading."""
        seen: dict[WorkerClient, tuple[int, int]] = {}
        inflight = finished = 0
        for r in self.replicas:
            w = r.worker
            if w is None or not w.alive:
                continue
            started, busy = w.calls_total, w.inflight
            before_started, before_busy = self._seen.get(w, (0, 0))
            finished += max(0, (started - before_started) - (busy - before_busy))
            inflight += busy
            seen[w] = (started, busy)
        self._seen = seen
        return Load(now, len(self.replicas), inflight, self.queued(), finished)

    def scale_once(self, now: float) -> int:
        """Read the load, decide and act on it: returns the replicas wanted."""
        decision = self._scaler.decide(self.read_load(now))
        n = len(self.replicas)
        if decision.replicas > n:
            self._grow(decision.replicas - n)
            self.scaled_up += 1
        elif decision.replicas < n:
            self._shrink(n - decision.replicas)
            self.scaled_down += 1
        else:
            return n
        log.info(
            "plugin %s scaled from %d to %d replicas: %s",
            self.name,
            n,
            decision.replicas,
            decision.reason,
        )
        self.last_scaling = {
            "from": n,
            "to": decision.replicas,
            "reason": decision.reason,
            "time": time.time(),
        }
        return decision.replicas

    async def _follow_load(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            await asyncio.sleep(INTERVAL)
            if self._swapping:
                continue
            try:
                self.scale_once(loop.time())
            except Exception:  # pragma: no cover - a bug here must not stop the pool
                log.exception("scaling plugin %s failed", self.name)

    def _grow(self, count: int) -> None:
        """Start ``count`` more replicas of the version served (they take calls once
        they run)."""
        for _ in range(count):
            r = PluginSupervisor(self.source, self.env)
            taken = set(self._slots.values())
            self._slots[r] = next(i for i in range(len(taken) + 1) if i not in taken)
            self.replicas.append(r)
            self.env.spawn_task(r.acquire()).add_done_callback(_consume)

    def _shrink(self, count: int) -> None:
        """Take ``count`` replicas out of the choice (the least busy, the newest first;
        never the first, whose worker tells the host when the tools change), and stop
        each after its calls drain."""

        def busy(i: int) -> tuple[int, int]:
            w = self.replicas[i].worker
            return (w.inflight if w is not None else 0, -i)

        going = sorted(range(1, len(self.replicas)), key=busy)[:count]
        for i in sorted(going, reverse=True):
            r = self.replicas.pop(i)
            del self._slots[r]
            task = asyncio.ensure_future(self._retire(r))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _retire(self, r: PluginSupervisor) -> None:
        try:
            await r.drain(self.env.config.drain_timeout)
        finally:
            await r.stop()

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
        if self.policy.scales or self.scaled_up or self.scaled_down:
            out["scaling"] = {
                "min_replicas": self.policy.min_replicas,
                "max_replicas": self.policy.max_replicas,
                "scaled_up": self.scaled_up,
                "scaled_down": self.scaled_down,
                "latency_ms": None
                if self._scaler.latency is None
                else round(self._scaler.latency * 1000, 3),
                "last": self.last_scaling,
            }
        return out


def _rank(key: str, replica: int) -> int:
    """The weight for ``key`` of the replica in slot ``replica`` (rendezvous hashing):
    stable across processes and runs, so the same key prefers the same replica."""
    digest = hashlib.blake2b(f"{replica}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _none() -> int:
    return 0


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
