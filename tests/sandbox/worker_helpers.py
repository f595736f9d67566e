"""Helpers the worker tests share: a worker for the body of a block, waiting for a file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from support.waiting import wait_until

from mcphost.sandbox.client import LogCallback, WorkerClient, spawn_worker
from mcphost.sandbox.isolation import IsolationBackend, WorkerSpec


@asynccontextmanager
async def running(
    spec: WorkerSpec, backend: IsolationBackend, on_log: LogCallback | None = None
) -> AsyncIterator[WorkerClient]:
    """A worker for ``spec`` for the body of the block; always closed afterwards."""
    client = await spawn_worker(spec, backend, on_log=on_log, handshake_timeout=10)
    try:
        yield client
    finally:
        await client.close()


async def wait_for_file(path: Path, predicate: Callable[[str], bool], bound: float = 5.0) -> str:
    """Wait until ``path`` exists and its text satisfies ``predicate``, at most ``bound``;
    return that text."""
    seen: list[str] = []

    def ready() -> bool:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return False
        seen[:] = [text]
        return predicate(text)

    await wait_until(ready, bound, f"{path} in the expected state")
    return seen[0]
