"""Supervision of one plugin: lazy start, health checks, restarts with backoff, swaps,
and the replacement of a worker whose threads are all stuck.

OTP style: a crashed worker is restarted after an exponential backoff; more than
``max_restarts`` crashes within ``restart_period`` seconds mark the plugin failed, and
it says so on every call until an operator resets it.

One state machine routes every change of the worker (``state``):

========== ===========================================================================
stopped    no worker; the next call starts one (start, after ``stop_worker`` or reset)
starting   a start is under way (first use, or the next call after a failed start)
running    a worker serves
restarting it crashed: a start follows after a backoff (or, when a start failed, the
           next call tries again)
failed     too many crashes: only a reset or a swap leaves it
refused    the version failed verification or its handshake: a reset, a swap or the
           next call tries again
========== ===========================================================================

A start commits its worker only if nothing changed the routing while it ran: a swap, a
replacement or a stop moves the supervisor to a new *epoch*, and a start begun in an
older epoch stops the worker it made instead of routing to it. Every failure of a start
is logged with the plugin and version and leaves one of the states above.

The health check runs every ``ping_interval``: a ping, and a reading of the worker's
memory and CPU time as a whole (everything it started included; see :mod:`.usage`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any

from mcphost.sandbox.client import WorkerClient, spawn_worker
from mcphost.sandbox.isolation import ResourceUsage
from mcphost.sdk.errors import (
    DescriptionsChanged,
    HandshakeRefused,
    MCPHostError,
    PluginFailed,
    VerificationError,
    WorkerCrashed,
)
from mcphost.sdk.schema import ToolSpec

from .policy import enforce_policy
from .sources import PluginSource
from .supervisor_env import SupervisorEnv
from .usage import MIB, Meter, over_limits

__all__ = ["PluginSupervisor", "SupervisorEnv", "over_limits"]

log = logging.getLogger("mcphost.supervisor")


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
        self._starting: asyncio.Task[WorkerClient | None] | None = None
        self._retiring: set[WorkerClient] = set()
        self._closing = False
        #: Moves on with every swap, replacement and stop (see the module docstring).
        self._epoch = 0
        #: Resolved when the epoch moves on: callers waiting for a start look again.
        self._moved: asyncio.Future[None] | None = None
        self._swapping = asyncio.Lock()
        #: The watcher's last reading of the routed worker's resource use.
        self._usage: tuple[WorkerClient, ResourceUsage] | None = None

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def tools(self) -> list[ToolSpec]:
        if self.worker is not None and self.worker.hello is not None:
            return list(self.worker.hello.tools)
        return list(self.source.tools or [])

    @property
    def route_token(self) -> object:
        """Changes whenever the tools offered may have changed (a new worker)."""
        return self.worker

    def call_info(self, call_id: int) -> tuple[str, str]:
        """The tool and trace context of a call of the running worker, by id."""
        return self.worker.call_info(call_id) if self.worker is not None else ("", "")

    async def drain(self, timeout: float) -> None:
        """Until the running worker has no call in flight, or ``timeout`` passes."""
        if self.worker is not None:
            await self.worker.drain(timeout)

    # -- starting ------------------------------------------------------------------
    async def _spawn(self, source: PluginSource) -> WorkerClient:
        """A verified, started worker of ``source`` that this supervisor follows; if any
        step fails, nothing it started is left running."""
        await self.env.verify(source)
        source = enforce_policy(source, self.env.config)
        worker = await self._start_worker(source)
        self.env.track(worker)
        worker.on_notify = self.env.on_notify
        try:
            if self.env.admit is not None and worker.hello is not None:
                self.env.admit(source, worker.hello)
            _check_approved(source, worker)
            # Bookkeeping runs as a callback of the worker's end, before any caller of a
            # failed call resumes: a caller retrying at once must see the crash counted.
            worker.closed.add_done_callback(lambda _: self._on_closed(worker))
            self.env.spawn_task(self._watch(worker))
            self.env.on_started(source.name, source.version, worker.pid)
        except BaseException as exc:
            self._retiring.add(worker)
            worker.kill(f"was stopped: its start failed ({exc!r})")
            raise
        return worker

    async def _start_worker(self, source: PluginSource) -> WorkerClient:
        """Start a worker of the verified ``source``, on this machine (a replica placed
        elsewhere overrides this; see mcphost.host.cluster)."""
        return await spawn_worker(
            self.env.worker_spec(source),
            self.env.backend,
            on_log=self.env.on_log,
            handshake_timeout=self.env.config.handshake_timeout,
        )

    def _begin(self, delay: float) -> asyncio.Task[WorkerClient | None]:
        """Start a worker of the routed version after ``delay`` seconds."""
        task = asyncio.ensure_future(self._start(delay, self._epoch))
        # Callers that wait read its failure; with none waiting (a restart) it was logged.
        task.add_done_callback(_consume)
        self._starting = task
        return task

    async def _start(self, delay: float, epoch: int) -> WorkerClient | None:
        """One start; ``None`` when a swap, replacement or stop made it unwanted."""
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            if epoch != self._epoch:
                return None
            source = self.source
            self.state = "starting"
            try:
                worker = await self._spawn(source)
            except Exception as exc:
                if epoch != self._epoch:
                    log.info("plugin %s: a start no longer wanted failed: %s", source.label, exc)
                    return None
                error = self._start_failed(source, exc)
                if error is exc:
                    raise
                raise error from exc
            if epoch != self._epoch or self._closing:
                # Routing changed while it started: what it made is not wanted.
                log.info(
                    "plugin %s: worker %s started after the plugin moved on; stopping it",
                    self.source.label,
                    worker.label,
                )
                self._retiring.add(worker)
                self.env.spawn_task(worker.close(reason="its start was overtaken"))
                return None
            self.worker = worker
            self.state, self.failure = "running", None
            if self.env.on_routed is not None:
                self.env.on_routed()
            return worker
        finally:
            if self._starting is asyncio.current_task():
                self._starting = None
            if self.state == "starting" and epoch == self._epoch:
                self.state = "stopped"  # cancelled: the host is stopping

    def _start_failed(self, source: PluginSource, exc: Exception) -> MCPHostError:
        """Record and log a failed start; return the error its callers see."""
        if isinstance(exc, (VerificationError, HandshakeRefused)):
            # Starting the same version again would be refused again: not a crash.
            self.state, self.failure = "refused", exc.message
            log.error("plugin %s was refused: %s", source.label, exc.message)
            return exc
        if isinstance(exc, MCPHostError):
            reason, error = exc.message, exc
        else:
            reason = str(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
            error = WorkerCrashed(
                f"could not start a worker for {source.label}: {reason}",
                data={"plugin": source.name, "version": source.version, "reason": reason},
            )
        delay = self._record_crash(f"could not start: {reason}")
        log.error(
            "plugin %s could not start: %s; %s",
            source.label,
            reason,
            "marked failed" if delay < 0 else "the next call tries again",
            exc_info=None if isinstance(exc, (MCPHostError, OSError)) else exc,
        )
        return error

    async def acquire(self) -> WorkerClient:
        """The running worker, starting it (lazily, once) when there is none."""
        while True:
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
            task = self._starting if self._starting is not None else self._begin(0.0)
            # A swap may route to a new worker before this start ends: look again then.
            waits: list[asyncio.Future[Any]] = [task, self._moves()]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if task.done() and not task.cancelled():
                worker = task.result()  # raises the start's failure
                if worker is not None:
                    return worker

    def _moves(self) -> asyncio.Future[None]:
        if self._moved is None or self._moved.done():
            self._moved = asyncio.get_running_loop().create_future()
        return self._moved

    def _move_on(self) -> None:
        """A new epoch: starts begun before it no longer route to what they start."""
        self._epoch += 1
        if self._moved is not None and not self._moved.done():
            self._moved.set_result(None)

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
        meter = Meter(worker)
        # Reading /proc or a cgroup takes a moment: always off the event loop.
        self._usage = (worker, await asyncio.to_thread(meter.read))
        while worker.alive:
            cfg = self.env.config  # read each round: the configuration may change live
            done, _ = await asyncio.wait([worker.closed], timeout=cfg.ping_interval)
            if done:
                break
            usage = await asyncio.to_thread(meter.read)
            self._usage = (worker, usage)
            over = over_limits(usage, worker.spec.limits)
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
            self._begin(delay)  # a failed restart is logged; the next call tries again

    def stop_worker(self, reason: str) -> None:
        """Stop the running worker (and a start under way) on purpose: not a crash, so
        nothing is counted and nothing restarts now; the next call starts (and verifies)
        the plugin again."""
        worker = self.worker
        if worker is None and self._starting is None:
            return
        self._move_on()
        self.worker = None
        self.state, self.failure = "stopped", reason
        if worker is not None:
            self._retiring.add(worker)
            worker.kill(reason)

    def reset(self) -> None:
        """Clear a failed state so the next call tries again, and replace a running
        worker that has threads stuck in calls that timed out or were cancelled."""
        self.crashes.clear()
        if self.state in ("failed", "refused", "restarting") and self._starting is None:
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
        propagates. A start of the old version still under way is overtaken: it stops
        what it started. Swaps run one at a time, in the order they were asked for.
        """
        async with self._swapping:
            if self._closing:
                raise WorkerCrashed(f"the host is stopping; {self.name} is not swapped")
            try:
                new = await self._spawn(source)
            except OSError as exc:
                raise WorkerCrashed(
                    f"could not start a worker for {source.label}: {exc}",
                    data={"plugin": source.name, "version": source.version, "reason": str(exc)},
                ) from exc
            if self._closing:
                self._retiring.add(new)
                self.env.spawn_task(new.close())
                raise WorkerCrashed(f"the host is stopping; {self.name} is not swapped")
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
        """Route to ``new`` from now on (a new epoch); drain the old worker, then stop it
        telling the calls still running there ``why``."""
        old = self.worker
        self._move_on()
        self.source, self.worker = source, new
        self.state, self.failure = "running", None
        if self.env.on_routed is not None:
            self.env.on_routed()
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
        epoch = self._epoch
        try:
            new = await self._spawn(self.source)
        except Exception as exc:
            # No replacement: end the wedged worker; the next call starts one (a crash).
            label = self.source.label
            log.error("plugin %s: no worker could replace %s: %r", label, worker.label, exc)
            worker.kill(f"{why}, and no new worker could start: {exc}")
            return
        if worker is not self.worker or epoch != self._epoch or self._closing:
            # It ended, was swapped out, or the host began to stop while the new one started.
            self._retiring.add(new)
            self.env.spawn_task(new.close(reason="its start was overtaken"))
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
        self._move_on()
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        workers = [w for w in (self.worker, *self._retiring) if w is not None]
        await asyncio.gather(*(w.close(grace) for w in workers), return_exceptions=True)
        self.worker = None
        self.state = "stopped"

    def stats(self) -> dict[str, Any]:
        """State and the watcher's last reading of resource use (never reads /proc here:
        this runs on the event loop)."""
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
            reading = self._usage
            if reading is not None and reading[0] is w:
                usage = reading[1]
                if usage.memory is not None:
                    out["memory_mb"] = round(usage.memory / MIB, 1)
                    out["memory_source"] = usage.memory_source
                if usage.cpu_seconds is not None:
                    out["cpu_seconds"] = round(usage.cpu_seconds, 3)
            out["inflight"] = w.inflight
            out["calls"] = w.calls_total
            out["stuck"] = w.stuck
        out["replaced"] = self.replaced
        return out


def _check_approved(source: PluginSource, worker: WorkerClient) -> None:
    """Refuse a worker whose handshake shows other tools, descriptions or schemas than
    the operator approved for its version (code computing them at run time could change
    them after the approval: a rug pull)."""
    if source.approved is None or worker.hello is None:
        return
    from mcphost.registry.approvals import diff, differences, items_of_tools

    seen = items_of_tools(worker.hello.tools)
    changed = differences(source.approved, seen)
    if changed:
        raise DescriptionsChanged(
            f"plugin {source.label} was refused: its handshake differs from what the "
            f"operator approved for this version ({'; '.join(changed)}); its tools are not "
            "served. Install a version whose descriptions do not change at run time, or "
            "roll back",
            data={
                "plugin": source.name,
                "version": source.version,
                "changes": changed,
                "diff": diff(source.approved, seen, "approved", "handshake"),
            },
        )


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
