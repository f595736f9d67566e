"""What every supervisor of one host shares, and the worker spec it starts from."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcphost.sandbox.client import LogCallback, WorkerClient
from mcphost.sandbox.isolation import IsolationBackend, Limits, WorkerSpec
from mcphost.sandbox.protocol import Hello

from .config import HostConfig
from .sources import PluginSource

__all__ = ["SupervisorEnv", "merge_limits"]


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
    #: Checks a source before each start; raises VerificationError. Required: a
    #: worker never starts unverified.
    verify: Callable[[PluginSource], Awaitable[None]]
    #: A wedged worker was replaced by a new one: plugin, version, why.
    on_replaced: Callable[[str, str, str], None] | None = None
    #: A supervisor routes to another worker from now on (a start, a swap, a
    #: replacement): the host looks its routes up anew, as the tools may differ.
    on_routed: Callable[[], None] | None = None
    #: A worker's Notify frame: plugin, kind, uri (see sandbox/protocol.py).
    on_notify: Callable[[str, str, str], None] | None = None
    #: Checks a started worker's handshake against the other plugins' before it is
    #: routed to (resource URIs that clash); raises HandshakeRefused.
    admit: Callable[[PluginSource, Hello], None] | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    #: Every worker started and not yet released (ended, its jail and scratch gone).
    workers: set[WorkerClient] = field(default_factory=set)
    _seq: itertools.count[int] = field(default_factory=itertools.count, init=False, repr=False)

    def spawn_task(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def track(self, worker: WorkerClient) -> None:
        """Follow ``worker`` until it is released: the host waits for that when it closes."""
        self.workers.add(worker)
        worker.released.add_done_callback(lambda _: self.workers.discard(worker))

    async def stop_workers(self) -> None:
        """Stop every worker still followed and wait until each is released."""
        workers = list(self.workers)
        await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)

    def worker_spec(self, source: PluginSource) -> WorkerSpec:
        """What a worker of ``source`` runs with: its limits, grants, paths and a
        scratch directory of its own."""
        cfg = self.config
        work = self.run_root / f"{source.name}-{source.version}-{time.time_ns()}-{next(self._seq)}"
        return WorkerSpec(
            plugin=source.name,
            version=source.version,
            entry=source.entry,
            paths=source.paths,
            data_dir=str(self.data_root / source.name),
            work_dir=str(work),
            limits=merge_limits(cfg.limits.to_limits(), source.limits),
            grants=source.grants,
            max_frame=cfg.max_frame,
            threads=cfg.worker_threads,
        )


def merge_limits(default: Limits, asked: Limits | None) -> Limits:
    """A plugin's own limits apply where it sets them; the host's default elsewhere."""
    if asked is None:
        return default
    return Limits(
        **{
            f: getattr(asked, f) if getattr(asked, f) is not None else getattr(default, f)
            for f in Limits.__struct_fields__
        }
    )
