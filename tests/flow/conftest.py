"""Fixtures of the flow suite: a plugin of streaming tools, written into tmp_path, and
hosts serving it with [streaming] settings of the test's choosing."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mcphost.host import Host, HostConfig, PluginSource

FLOWKIT = '''
import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator

from mcphost.sdk import Plugin

plugin = Plugin("flowkit")
CLOSED = {"n": 0}


@plugin.tool
def numbers(n: int, size: int = 0) -> Iterator[dict]:
    """Items {"i": 0..n-1, "pad": size bytes}."""
    pad = "x" * size
    try:
        for i in range(n):
            yield {"i": i, "pad": pad}
    finally:
        CLOSED["n"] += 1


@plugin.tool
async def anumbers(n: int, size: int = 0, delay: float = 0.0) -> AsyncIterator[dict]:
    """The same from an async generator, ``delay`` seconds apart."""
    pad = "x" * size
    try:
        for i in range(n):
            if delay:
                await asyncio.sleep(delay)
            yield {"i": i, "pad": pad}
    finally:
        CLOSED["n"] += 1


@plugin.tool
def endless(size: int = 0) -> Iterator[dict]:
    """Items for ever."""
    pad = "x" * size
    i = 0
    try:
        while True:
            yield {"i": i, "pad": pad}
            i += 1
    finally:
        CLOSED["n"] += 1


@plugin.tool
def crashes_after(n: int) -> Iterator[int]:
    """n items, then (once they have left) the worker dies."""
    yield from range(n)
    time.sleep(0.3)
    os._exit(3)


@plugin.tool
async def goes_quiet(n: int, quiet: float) -> AsyncIterator[int]:
    """n items, then nothing for ``quiet`` seconds, then one more."""
    try:
        for i in range(n):
            yield i
        await asyncio.sleep(quiet)
        yield n
    finally:
        CLOSED["n"] += 1


@plugin.tool
def closed() -> int:
    """How many generators of this worker were closed or ran out."""
    return CLOSED["n"]


@plugin.tool
def pid() -> int:
    """This worker's process id."""
    return os.getpid()
'''


@pytest.fixture
def flowkit(tmp_path: Path) -> PluginSource:
    code = tmp_path / "flowkit-code"
    code.mkdir()
    (code / "flowkit.py").write_text(textwrap.dedent(FLOWKIT), encoding="utf-8")
    return PluginSource(
        name="flowkit",
        version="1.0.0",
        entry="flowkit:plugin",
        paths=[str(code)],
        origin="directory",
        root=str(code),
    )


@pytest.fixture
def flow_host(home_dir: Path, flowkit: PluginSource) -> Callable[..., Host]:
    """``flow_host(**streaming)``: a Host serving flowkit with those [streaming] keys
    (the rlimits backend and unsigned plugins, as in the host suite)."""

    def make(*, sources: tuple[PluginSource, ...] = (), **streaming: Any) -> Host:
        config = HostConfig(allow_unsigned=True, isolation="rlimits", streaming=streaming)
        return Host(
            home_dir,
            config=config,
            sources=[flowkit, *sources],
            environment=False,
            registry=False,
        )

    return make
