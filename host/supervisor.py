"""Supervision of one plugin: lazy start, health checks, restarts with backoff, swaps,
and the replacement of a worker whose threads are all stuck.

OTP style: a crashed worker is restarted after an exponential backoff; more than
``max_restarts`` crashes within ``restart_period`` seconds mark the plugin failed, and
it says so on every call until an operator resets it.

The health check runs every ``ping_interval``: a ping, and a reading of the worker's
memory and CPU time as a whole (everything it started included; see :mod:`.usage`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcphost.sandbox.client import LogCallback, WorkerClient, spawn_worker
from mcphost.sandbox.isolation import (
    IsolationBackend,
    Limits,
    WorkerSpec,
)
from mcphost.sdk.errors import (
    HandshakeRefused,
    MCPHostError,
    PluginFailed,
    VerificationError,
    WorkerCrashed,
)
from mcphost.sdk.schema import ToolSpec

from .config import HostConfig
from .policy import enforce_policy
from .sources import PluginSource
from .usage import MIB, Meter, over_limits

__all__ = ["PluginSupervisor", "SupervisorEnv", "over_limits"]

log = logging.getLogger("mcphost.supervisor")


@dataclass
class SupervisorEnv:
    """What every supervisor of one host shares."""

    config: HostConfig
    backend: IsolationBackend
    data_root: Path
    run_root: Path
    on_log: LogCallback
    on_started: Callable[[str, str, int], None]
    on_crashed: Callable[[str, str, str], None]
    #: A wedged worker was replaced by a new one: plugin, version, why.
    on_replaced: Callable[[str, str, str], None] | None = None
    #: Checks a source before each start; raises VerificationError.
    verify: Callable[[PluginSource], Awaitable[None]] | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def spawn_task(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


def _merge_limits(default: Limits, asked: Limits | None) -> Limits:
    """A plugin's own limits apply where it sets them; the host's default elsewhere."""
    if asked is None:
        return default
    return Limits(
        **{
            f: getattr(asked, f) if getattr(asked, f) is not None else getattr(default, f)
            for f in Limits.__struct_fields__
        }
    )


class PluginSupervisor:
    """Keeps one plugin's worker running and routes to the active version."""

    def __init__(self, source: PluginSource, env: SupervisorEnv) -> None:
        self.source = source
        self.env = env
        self.worker: WorkerClient | None = None
        self.state = "stopped"
        self.failure: str | None = None
        self.restarts = 0
        #: Workers replaced because their threads were stuck (not crashes).
        self.replaced = 0
        self.crashes: collections.deque[float] = collections.deque()
        self._starting: asyncio.Task[WorkerClient] | None = None
        self._retiring: set[WorkerClient] = set()
        self._closing = False
        self._seq = 0

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def tools(self) -> list[ToolSpec]:
        if self.worker is not None and self.worker.hello is not None:
            return list(self.worker.hello.tools)
        return list(self.source.tools or [])

    # -- starting ------------------------------------------------------------------
    def _spec(self, source: PluginSource) -> WorkerSpec:
        cfg = self.env.config
        self._seq += 1
        work = self.env.run_root / f"{source.name}-{source.version}-{time.time_ns()}-{self._seq}"
        return WorkerSpec(
            plugin=source.name,
            version=source.version,
            entry=source.entry,
            paths=source.paths,
            data_dir=str(self.env.data_root / source.name),
            work_dir=str(work),
            limits=_merge_limits(cfg.limits.to_limits(), source.limits),
            grants=source.grants,
            max_frame=cfg.max_frame,
            threads=cfg.worker_threads,
        )

    async def _spawn(self, source: PluginSource) -> WorkerClient:
        if self.env.verify is not None:
            await self.env.verify(source)
        source = enforce_policy(source, self.env.config)
        worker = await spawn_worker(
            self._spec(source),
            self.env.backend,
            on_log=self.env.on_log,
            handshake_timeout=self.env.config.handshake_timeout,
        )
        # Bookkeeping runs as a callback of the worker's end, before any caller of a
        # failed call resumes: a caller retrying at once must see the crash counted.
        worker.closed.add_done_callback(lambda _: self._on_closed(worker))
        self.env.spawn_task(self._watch(worker))
        self.env.on_started(source.name, source.version, worker.pid)
        return worker

    async def _start(self, delay: float) -> WorkerClient:
        if delay > 0:
            await asyncio.sleep(delay)
        self.state = "starting"
        try:
            worker = await self._spawn(self.source)
        except (VerificationError, HandshakeRefused) as exc:
            # Starting the same version again would be refused again: not a crash.
            self.state = "refused"
            self.failure = exc.message
            raise
        except MCPHostError as exc:
            self._record_crash(f"could not start: {exc.message}")
            raise
        except OSError as exc:
            self._record_crash(f"could not start: {exc}")
            raise WorkerCrashed(f"could not start a worker for {self.source.label}: {exc}") from exc
        finally:
            self._starting = None
        self.worker = worker
        self.state = "running"
        self.failure = None
        return worker

    async def acquire(self) -> WorkerClient:
        """The running worker, starting it (lazily, once) when there is none."""
        w = self.worker
        if w is not None and w.alive:
            return w
        if self.state == "failed":
            raise PluginFailed(
                f"plugin {self.source.label} is marked failed: {self.failure}; fix the "
                "plugin and reinstall it, or reset it with `mcphost plugin reset "
                f"{self.name}` / Host.reset_plugin()",
                data={"plugin": self.name, "reason": self.failure},
            )
        if self._closing:
            raise WorkerCrashed(f"the host is stopping; {self.name} takes no new calls")
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start(0.0))
        return await asyncio.shield(self._starting)

    # -- crashes -------------------------------------------------------------------
    def _record_crash(self, reason: str) -> float:
        """Count a crash; return the backoff before the next start, or -1 when failed."""
        now = time.monotonic()
        cfg = self.env.config
        self.crashes.append(now)
        while self.crashes and now - self.crashes[0] > cfg.restart_period:
            self.crashes.popleft()
        if len(self.crashes) > cfg.max_restarts:
            self.state = "failed"
            self.failure = (
                f"{len(self.crashes)} crashes within {cfg.restart_period:g}s "
                f"(limit {cfg.max_restarts}); last: {reason}"
            )
            log.error("plugin %s marked failed: %s", self.source.label, self.failure)
            return -1.0
        self.state = "restarting"
        self.failure = reason
        return float(min(cfg.backoff_max, cfg.backoff_initial * 2.0 ** (len(self.crashes) - 1)))

    async def _watch(self, worker: WorkerClient) -> None:
        """Health-check a worker until it ends: resource use, then a ping, each interval."""
        cfg = self.env.config
        meter = Meter(worker)
        while worker.alive:
            done, _ = await asyncio.wait([worker.closed], timeout=cfg.ping_interval)
            if done:
                break
            # Reading /proc (smaps_rollup) takes a moment: off the event loop.
            over = over_limits(await asyncio.to_thread(meter.read), worker.spec.limits)
            if over is not None:
                worker.kill(over)
                break
            try:
                await worker.ping(cfg.ping_timeout)
            except TimeoutError:
                worker.kill(f"did not answer a ping within {cfg.ping_timeout:g}s (hung)")
                break
            except MCPHostError:
                break
            threads = worker.spec.threads
            if worker.stuck >= threads:
                # It answers pings, but every sync call would wait for a thread for ever.
                await self._replace(
                    worker,
                    f"all {threads} of its threads are stuck in calls that timed out or "
                    "were cancelled (a thread cannot be stopped)",
                )
                break
        await worker.closed

    def _on_closed(self, worker: WorkerClient) -> None:
        """A worker ended: count the crash and restart it, unless it was stopped on purpose."""
        reason = worker.closed.result()
        if worker in self._retiring or self._closing:
            self._retiring.discard(worker)
            return
        if worker is not self.worker:
            return
        self.worker = None
        self.restarts += 1
        self.env.on_crashed(worker.spec.plugin, worker.spec.version, reason)
        log.warning("worker for %s %s", worker.label, reason)
        delay = self._record_crash(reason)
        if delay >= 0 and self._starting is None:
            self._starting = asyncio.ensure_future(self._start(delay))
            # A failed restart is recorded as a crash and retried by the next call.
            self._starting.add_done_callback(_consume)

    def stop_worker(self, reason: str) -> None:
        """Stop the running worker on purpose: not a crash, so nothing is counted and
        nothing restarts now; the next call starts (and verifies) the plugin again."""
        worker = self.worker
        if worker is None:
            return
        self.worker = None
        self._retiring.add(worker)
        self.state, self.failure = "stopped", reason
        worker.kill(reason)

    def reset(self) -> None:
        """Clear a failed state so the next call tries again, and replace a running
        worker that has threads stuck in calls that timed out or were cancelled."""
        self.crashes.clear()
        if self.state in ("failed", "refused"):
            self.state = "stopped"
            self.failure = None
        worker = self.worker
        if worker is not None and worker.alive and worker.stuck > 0:
            self.env.spawn_task(
                self._replace(
                    worker,
                    f"reset by an operator while {worker.stuck} of its {worker.spec.threads} "
                    "threads were stuck in calls that timed out or were cancelled",
                )
            )

    # -- swap, replace and stop ----------------------------------------------------
    async def swap(self, source: PluginSource, drain_timeout: float) -> WorkerClient:
        """Start ``source``, switch routing to it at once, drain and stop the old worker.

        If the new version fails to verify or start, nothing changes and the error
        propagates.
        """
        new = await self._spawn(source)
        old = self.worker
        self._switch(
            source,
            new,
            drain_timeout,
            None
            if old is None
            else f"{old.label} was swapped out and its drain time of {drain_timeout:g}s "
            "(drain_timeout) ran out; call again to reach the version now active",
        )
        self.crashes.clear()
        return new

    def _switch(
        self, source: PluginSource, new: WorkerClient, drain_timeout: float, why: str | None
    ) -> None:
        """Route to ``new`` from now on; drain the old worker, then stop it telling the
        calls still running there ``why``."""
        old = self.worker
        self.source, self.worker = source, new
        self.state, self.failure = "running", None
        if old is not None:
            self._retiring.add(old)
            self.env.spawn_task(self._retire(old, drain_timeout, why or "it was replaced"))

    async def _replace(self, worker: WorkerClient, why: str) -> None:
        """Replace a worker that still runs but can no longer serve, the way a swap does
        (start the same version anew, switch, drain and stop the old one). Not a crash:
        nothing counts towards marking the plugin failed."""
        if worker is not self.worker or self._closing:
            return
        log.warning("plugin %s: replacing worker %s: %s", self.source.label, worker.label, why)
        if self.env.on_replaced is not None:
            self.env.on_replaced(worker.spec.plugin, worker.spec.version, why)
        try:
            new = await self._spawn(self.source)
        except (MCPHostError, OSError) as exc:
            # No replacement: end the wedged worker; the next call starts one (a crash).
            worker.kill(f"{why}, and no new worker could start: {exc}")
            return
        if worker is not self.worker or self._closing:
            # It ended, or the host began to stop, while the new one started.
            self._retiring.add(new)
            self.env.spawn_task(new.close())
            return
        self.replaced += 1
        drain = self.env.config.drain_timeout
        self._switch(
            self.source,
            new,
            drain,
            f"{worker.label} was replaced ({why}); call again to reach the new worker",
        )

    async def _retire(self, worker: WorkerClient, drain_timeout: float, why: str) -> None:
        await worker.drain(drain_timeout)
        await worker.close(reason=why)

    async def stop(self, grace: float = 2.0) -> None:
        self._closing = True
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        workers = [w for w in (self.worker, *self._retiring) if w is not None]
        await asyncio.gather(*(w.close(grace) for w in workers), return_exceptions=True)
        self.worker = None
        self.state = "stopped"

    def stats(self) -> dict[str, Any]:
        w = self.worker
        out: dict[str, Any] = {
            "plugin": self.name,
            "version": self.source.version,
            "state": self.state,
            "restarts": self.restarts,
            "failure": self.failure,
            "pid": w.pid if w is not None and w.alive else None,
        }
        if w is not None and w.alive:
            usage = Meter(w).read()
            if usage.memory is not None:
                out["rss_mb"] = round(usage.memory / MIB, 1)
            if usage.cpu_seconds is not None:
                out["cpu_seconds"] = round(usage.cpu_seconds, 3)
            out["inflight"] = w.inflight
            out["calls"] = w.calls_total
            out["stuck"] = w.stuck
        out["replaced"] = self.replaced
        return out


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
