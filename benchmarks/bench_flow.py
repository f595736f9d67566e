"""Streams under flow control (host/flow): throughput against a raw one-way floor, memory
under a slow consumer against the bound the windows give, and admission by priority
under load. See benchmarks/README.md, "bench_flow".

Every figure is measured in this run, side by side: the raw floor is the same frames
(msgspec StreamItem, length-prefixed) written by one process to a socketpair and decoded
by this one, with nothing of mcphost. Since protocol 4 a worker sends a stream's items
several to a frame (Items), so a second floor writes those frames (128 items each) the
same way; the target stays against the first, the issue's definition.

    python benchmarks/bench_flow.py [--quick] [--only throughput|slow|admission]
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from core_flows import peak_rss, reset_peak_rss

from mcphost.host import Host, HostConfig, PluginSource
from mcphost.sandbox.protocol import FrameCodec, Items, StreamEnd

Row = dict[str, Any]
MIB = 1024 * 1024

PLUGIN = """
from collections.abc import Iterator

from mcphost.sdk import Plugin

plugin = Plugin("{name}")


@plugin.tool
def seq(n: int) -> Iterator[int]:
    \"\"\"0..n-1.\"\"\"
    yield from range(n)


@plugin.tool
def padded(n: int, size: int) -> Iterator[dict]:
    \"\"\"{{"i": i, "pad": size bytes}} for i in 0..n-1.\"\"\"
    pad = "x" * size
    for i in range(n):
        yield {{"i": i, "pad": pad}}
"""

#: The raw floor's writer: N StreamItem frames, in batches of 32, then a StreamEnd.
WRITER = """
import socket, sys
from mcphost.sandbox.protocol import FrameCodec, StreamEnd, StreamItem
fd, n = int(sys.argv[1]), int(sys.argv[2])
sock = socket.socket(fileno=fd)
codec = FrameCodec()
out = bytearray()
for i in range(n):
    codec.encode_into(StreamItem(id=1, seq=i, value=i), out)
    if not (i + 1) % 32:
        sock.sendall(out)
        out.clear()
codec.encode_into(StreamEnd(id=1, count=n), out)
sock.sendall(out)
sock.close()
"""


#: The Items floor's writer: N items, 128 to an Items frame and a write, then a StreamEnd.
WRITER_ITEMS = """
import socket, sys
from mcphost.sandbox.protocol import FrameCodec, ItemBatch, StreamEnd
fd, n = int(sys.argv[1]), int(sys.argv[2])
sock = socket.socket(fileno=fd)
codec = FrameCodec()
batch = ItemBatch(codec)
out = bytearray()
for i in range(n):
    batch.add(1, i, i)
    if not (i + 1) % 128:
        batch.encode_into(codec, out)
        sock.sendall(out)
        out.clear()
batch.encode_into(codec, out)
codec.encode_into(StreamEnd(id=1, count=n), out)
sock.sendall(out)
sock.close()
"""


def raw_floor(n: int, items: bool = False) -> float:
    """Items/s of n small stream items one way over a socketpair, decoded here: one
    StreamItem frame each, or (``items``) 128 to an Items frame, each value decoded."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    codec = FrameCodec()
    t0 = time.perf_counter()
    writer = WRITER_ITEMS if items else WRITER
    proc = subprocess.Popen(
        [sys.executable, "-c", writer, str(theirs.fileno()), str(n)], pass_fds=[theirs.fileno()]
    )
    theirs.close()
    buf = b""
    count = 0
    done = False
    while not done:
        chunk = mine.recv(1 << 18)
        if not chunk:
            break
        frames, buf = codec.decode_stream(buf + chunk)
        for f in frames:
            if isinstance(f, StreamEnd):
                done = True
            elif isinstance(f, Items):
                for raw in f.values:
                    codec.decode_value(raw)
                count += len(f.values)
            else:
                count += 1
    took = time.perf_counter() - t0
    proc.wait()
    mine.close()
    if count != n:
        raise RuntimeError(f"raw floor read {count} items instead of {n}")
    return n / took


def source(tmp: Path, name: str) -> PluginSource:
    code = tmp / f"{name}-code"
    code.mkdir()
    (code / f"{name}.py").write_text(textwrap.dedent(PLUGIN.format(name=name)))
    return PluginSource(
        name=name,
        version="1.0.0",
        entry=f"{name}:plugin",
        paths=[str(code)],
        origin="directory",
        root=str(code),
    )


def config(**streaming: Any) -> HostConfig:
    return HostConfig(allow_unsigned=True, isolation="rlimits", streaming=streaming)


async def throughput(tmp: Path, n: int, rounds: int) -> list[Row]:
    """Host.stream (flow control) and WorkerClient.stream without it, against the floor,
    round by round."""
    flow: list[float] = []
    plain: list[float] = []
    floor: list[float] = []
    floor4: list[float] = []
    async with Host(
        tmp / "home-t",
        config=config(),
        sources=[source(tmp, "bflow")],
        environment=False,
        registry=False,
    ) as host:
        async for _ in host.stream("bflow.seq", {"n": 1000}):
            pass
        worker = host._supervisors["bflow"].worker
        assert worker is not None
        for _ in range(rounds):
            floor.append(await asyncio.to_thread(raw_floor, n))
            floor4.append(await asyncio.to_thread(raw_floor, n, True))
            t0 = time.perf_counter()
            count = 0
            async for i in host.stream("bflow.seq", {"n": n}):
                if i != count:
                    raise RuntimeError(f"item {count} arrived as {i}")
                count += 1
            flow.append(n / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            count = 0
            async for _ in worker.stream("seq", {"n": n}, window=32):
                count += 1
            plain.append(n / (time.perf_counter() - t0))
    ratios = [f / r for f, r in zip(flow, floor, strict=True)]
    return [
        {
            "name": f"Host.stream of {n:,} small items / raw one-way floor",
            "value": statistics.median(ratios),
            "unit": "x floor",
            "detail": f"{statistics.median(flow):,.0f} items/s vs floor "
            f"{statistics.median(floor):,.0f} items/s",
            "target": ">= 0.5x",
            "passed": statistics.median(ratios) >= 0.5,
            "note": f"median of {rounds} rounds",
        },
        {
            "name": f"Host.stream of {n:,} small items / raw floor of Items frames",
            "value": statistics.median([f / r for f, r in zip(flow, floor4, strict=True)]),
            "unit": "x floor",
            "detail": f"floor {statistics.median(floor4):,.0f} items/s",
            "note": "the frames protocol 4 sends: 128 items to a frame, each value decoded",
        },
        {
            "name": f"WorkerClient.stream of {n:,} items without flow control / raw floor",
            "value": statistics.median([p / r for p, r in zip(plain, floor, strict=True)]),
            "unit": "x floor",
            "detail": f"{statistics.median(plain):,.0f} items/s",
            "note": "the item-credit path alone: what flow control costs beside it",
        },
    ]


async def slow_consumer(tmp: Path, seconds: float) -> list[Row]:
    """A consumer 100x slower than the producer: peak RSS growth of host and worker
    against the bound the windows give."""
    high, window, size = 1 * MIB, 256 * 1024, 1000
    async with Host(
        tmp / "home-s",
        config=config(high_watermark=high, low_watermark=high // 4, window_bytes=window),
        sources=[source(tmp, "bslow")],
        environment=False,
        registry=False,
    ) as host:
        async for _ in host.stream("bslow.padded", {"n": 10, "size": size}):
            pass
        worker = host._supervisors["bslow"].worker
        assert worker is not None
        reset_peak_rss(os.getpid())
        reset_peak_rss(worker.pid)
        base_host, base_worker = peak_rss(os.getpid()), peak_rss(worker.pid)
        expected = 0
        t_end = time.monotonic() + seconds
        paused = 0
        stream = host.stream("bslow.padded", {"n": 10**9, "size": size})
        async for item in stream:
            if item["i"] != expected:
                raise RuntimeError(f"item {expected} arrived as {item['i']}")
            expected += 1
            await asyncio.sleep(0.001)  # ~1,000 items/s; the producer does >100,000
            if expected % 100 == 0:
                paused += host.flow.snapshot()[0]["state"] == "paused"
                if time.monotonic() > t_end:
                    break
        await stream.aclose()  # type: ignore[attr-defined]
        grow_host = peak_rss(os.getpid()) - base_host
        grow_worker = peak_rss(worker.pid) - base_worker
    item_wire = size + 20
    wire_bound = high + window + item_wire
    # Items as Python objects on the host: dict + str of `size` bytes, ~2x their wire size.
    bound = 2 * wire_bound + 8 * MIB
    return [
        {
            "name": f"slow consumer for {seconds:g}s ({expected:,} items of {size} B, in order)",
            "value": grow_host / MIB,
            "unit": "MiB host peak RSS growth",
            "detail": f"host +{grow_host / MIB:.1f} MiB, worker +{grow_worker / MIB:.1f} MiB",
            "target": f"<= {bound / MIB:.1f} MiB",
            "passed": grow_host <= bound and grow_worker <= bound,
            "note": f"bound: 2 x (high {high // 1024} KiB + window {window // 1024} KiB + one "
            f"item) + 8 MiB; paused at {paused} of {expected // 100} looks",
        }
    ]


async def admission(tmp: Path, lows: list[int]) -> list[Row]:
    """Time to first item of 20 high-priority streams while `low` low-priority ones load
    4 plugins with max_concurrent 32: its p99 should stay flat as `low` grows."""
    sources = [source(tmp, f"badm{k}") for k in range(4)]
    rows: list[Row] = []
    async with Host(
        tmp / "home-a",
        config=config(max_concurrent=32, max_concurrent_per_plugin=16, admission_timeout=120),
        sources=sources,
        environment=False,
        registry=False,
    ) as host:
        for k in range(4):
            async for _ in host.stream(f"badm{k}.seq", {"n": 10}):
                pass

        async def one(k: int, prio: int, n: int, waits: list[float] | None) -> int:
            t0 = time.perf_counter()
            count = 0
            async for _ in host.stream(f"badm{k % 4}.seq", {"n": n}, priority=prio):
                if count == 0 and waits is not None:
                    waits.append(time.perf_counter() - t0)
                count += 1
                if count % 200 == 0:
                    await asyncio.sleep(0.001)
            return count

        for low in lows:
            waits: list[float] = []
            t0 = time.perf_counter()
            lows_t = [asyncio.create_task(one(k, 9, 5000, None)) for k in range(low)]
            await asyncio.sleep(0.05)  # the low ones fill every place first
            highs = [asyncio.create_task(one(k, 0, 500, waits)) for k in range(20)]
            done = await asyncio.gather(*lows_t, *highs)
            took = time.perf_counter() - t0
            if done != [5000] * low + [500] * 20:
                raise RuntimeError("a stream did not complete")
            waits.sort()
            p99 = waits[min(len(waits) - 1, int(0.99 * len(waits)))]
            rows.append(
                {
                    "name": f"high-priority time to first item, {low} low-priority streams "
                    f"+ 20 high, 4 plugins, max_concurrent 32",
                    "value": p99 * 1000,
                    "unit": "ms p99",
                    "detail": f"p50 {statistics.median(waits) * 1000:.1f} ms",
                    "note": f"{low + 20} streams completed in {took:.1f}s",
                }
            )
    return rows


def run(quick: bool) -> list[Row]:
    tmp = Path(tempfile.mkdtemp(prefix="mcphost-bench-flow-"))
    try:
        return asyncio.run(_run(quick, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _run(quick: bool, tmp: Path, only: str = "") -> list[Row]:
    n = 200_000 if quick else 1_000_000
    rows: list[Row] = []
    if only in ("", "throughput"):
        rows += await throughput(tmp, n, rounds=1 if quick else 3)
    if only in ("", "slow"):
        rows += await slow_consumer(tmp, 3.0 if quick else 20.0)
    if only in ("", "admission"):
        rows += await admission(tmp, [20, 90, 180] if quick else [50, 100, 180])
    return rows


if __name__ == "__main__":
    # Prints the rows (benchmarks/run.py writes the results files); --only runs one part.
    part = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else ""
    if part not in ("", "throughput", "slow", "admission"):
        sys.exit(f"--only takes throughput, slow or admission, not {part!r}")
    tmp_dir = Path(tempfile.mkdtemp(prefix="mcphost-bench-flow-"))
    try:
        for row in asyncio.run(_run("--quick" in sys.argv, tmp_dir, part)):
            print(row)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
