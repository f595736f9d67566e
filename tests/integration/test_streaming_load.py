"""A few seconds of streaming load through real workers: many streams at once under an
admission limit, and one stream read far slower than it is produced. Every item arrives
once and in order, and the memory of the host and of the worker stays bounded (the big
figures are measured in benchmarks/bench_flow.py)."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import psutil
import pytest

from mcphost.host import Host, HostConfig, PluginSource

LOADKIT = """
from collections.abc import Iterator

from mcphost.sdk import Plugin

plugin = Plugin("loadkit")


@plugin.tool
def seq(n: int) -> Iterator[int]:
    \"\"\"0..n-1.\"\"\"
    yield from range(n)
"""

MIB = 1024 * 1024


def loadkit(tmp_path: Path, name: str = "loadkit") -> PluginSource:
    code = tmp_path / f"{name}-code"
    code.mkdir()
    (code / f"{name}.py").write_text(
        textwrap.dedent(LOADKIT).replace('"loadkit"', f'"{name}"'), encoding="utf-8"
    )
    return PluginSource(
        name=name,
        version="1.0.0",
        entry=f"{name}:plugin",
        paths=[str(code)],
        origin="directory",
        root=str(code),
    )


@pytest.mark.slow
def test_a_slow_consumer_keeps_memory_bounded_and_gets_every_item_in_order(
    tmp_path: Path,
) -> None:
    high, window = 256 * 1024, 64 * 1024
    config = HostConfig(
        allow_unsigned=True,
        isolation="rlimits",
        streaming={"high_watermark": high, "low_watermark": high // 4, "window_bytes": window},
    )

    async def scenario() -> None:
        async with Host(
            tmp_path / "home",
            config=config,
            sources=[loadkit(tmp_path)],
            environment=False,
            registry=False,
        ) as host:
            me = psutil.Process()
            expected = 0
            states: set[str] = set()
            worker: psutil.Process | None = None
            base_host = base_worker = peak_host = peak_worker = 0
            loop = asyncio.get_running_loop()
            t_end = loop.time() + 3.0
            stream = host.stream("loadkit.seq", {"n": 10**9})
            async for item in stream:
                assert item == expected, "an item was lost, duplicated or reordered"
                expected += 1
                if expected % 500 == 0:
                    # The consumer: about 25,000 items a second, the producer can do
                    # several times that.
                    await asyncio.sleep(0.02)
                    states.add(host.flow.snapshot()[0]["state"])
                    if worker is None:
                        pid = next(s["pid"] for s in host.stats() if s["plugin"] == "loadkit")
                        worker = psutil.Process(pid)
                        base_host = me.memory_info().rss
                        base_worker = worker.memory_info().rss
                    peak_host = max(peak_host, me.memory_info().rss)
                    peak_worker = max(peak_worker, worker.memory_info().rss)
                    if loop.time() > t_end:
                        break
            await stream.aclose()  # type: ignore[attr-defined]
            assert "paused" in states, "the producer was never paused"
            # Bounded: one high watermark and one byte window of small items, as Python
            # objects, is a few MiB; an unbounded buffer would hold millions of items.
            assert peak_host - base_host < 24 * MIB, (base_host, peak_host)
            assert peak_worker - base_worker < 16 * MIB, (base_worker, peak_worker)
            assert host.flow.snapshot() == []

    asyncio.run(scenario())


@pytest.mark.slow
def test_many_streams_from_several_plugins_under_an_admission_limit_all_complete(
    tmp_path: Path,
) -> None:
    sources = [loadkit(tmp_path, f"load{k}") for k in range(3)]
    config = HostConfig(
        allow_unsigned=True,
        isolation="rlimits",
        streaming={"max_concurrent": 8, "max_concurrent_per_plugin": 4},
    )

    async def scenario() -> None:
        async with Host(
            tmp_path / "home", config=config, sources=sources, environment=False, registry=False
        ) as host:
            most = [0]

            async def one(k: int) -> list[int]:
                out = []
                async for item in host.stream(f"load{k % 3}.seq", {"n": 2000}, priority=k % 5):
                    out.append(item)
                    if item % 500 == 0:
                        # Holding a place: not queued, nor suspended by a higher priority.
                        running = [s for s in host.streams() if s["state"] in ("flowing", "paused")]
                        most[0] = max(most[0], len(running))
                        await asyncio.sleep(0)
                return out

            results = await asyncio.gather(*(one(k) for k in range(60)))
            assert all(r == list(range(2000)) for r in results)
            assert 1 < most[0] <= 8
            tools = host.flow.metrics.tools  # type: ignore[union-attr]
            assert sum(t.completed for t in tools.values()) == 60

    asyncio.run(scenario())
