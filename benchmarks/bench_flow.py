"""Streams under flow control (host/flow): throughput against a raw one-way floor, memory
under a slow consumer against the bound the windows give, and admission by priority
under load. See benchmarks/README.md, "bench_flow".

Every figure is measured in this run, side by side: the raw floor is the same frames
(msgspec StreamItem, length-prefixed) written by one process to a socketpair and decoded
by this one, with nothing of mcphost. Since protocol 4 a worker sends a stream's items
several to a frame (Items), so a second floor writes those frames (128 items each) the
same way; the target stays against the first, the issue's definition.

The slow_http part serves the stream from a real ``mcphost serve --http`` process to a
client reading its SSE answer through a small receive buffer, against a fresh server whose
client reads it at once: the server's peak RSS in each, and the bound its buffers give.

    python benchmarks/bench_flow.py [--quick] [--only throughput|slow|slow_http|admission]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
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


#: The [streaming] settings of the slow_http server: small, so the slow stretch alone
#: passes every buffer several times.
HTTP_STREAMING = {"high_watermark": 256 * 1024, "low_watermark": 64 * 1024}
HTTP_WINDOW = 128 * 1024
#: The outbox of one HTTP request (host/mcp/outbox.py, DEFAULT_OUTBOX_BYTES).
HTTP_OUTBOX = 1 * MIB
#: uvicorn pauses a response's writer while its transport holds more than this
#: (asyncio's default high-water mark for a socket transport).
HTTP_TRANSPORT = 64 * 1024
#: The slow reader's receive buffer, what it asks of each recv, and its pause after each.
SLOW_RCVBUF, SLOW_RECV, SLOW_PAUSE = 16 * 1024, 16 * 1024, 0.01


def _plugin_dir(tmp: Path, name: str) -> Path:
    """A directory ``serve --plugin-dir`` reads: the module and a dist-info naming its
    entry point (what ``pip install --target`` would leave, without building a wheel)."""
    root = tmp / f"{name}-target"
    info = root / f"{name}-1.0.0.dist-info"
    info.mkdir(parents=True)
    (root / f"{name}.py").write_text(textwrap.dedent(PLUGIN.format(name=name)))
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0.0\n")
    (info / "entry_points.txt").write_text(f"[mcphost.plugins]\n{name} = {name}:plugin\n")
    return root


class _Serve:
    """``mcphost serve --http 127.0.0.1:0`` in a home of its own, with a bearer token."""

    def __init__(self, tmp: Path, label: str, plugins: Path) -> None:
        from mcphost.host.home import Home
        from mcphost.security.tokens import create_token

        home = tmp / f"home-{label}"
        home.mkdir()
        streaming = {**HTTP_STREAMING, "window_bytes": HTTP_WINDOW}
        (home / "config.toml").write_text(
            "allow_unsigned = true\nping_timeout = 120\n[streaming]\n"
            + "".join(f"{k} = {v}\n" for k, v in streaming.items())
        )
        self.token, _ = create_token(Home(home).tokens_file, f"bench-{label}")
        script = Path(sys.executable).with_name("mcphost")
        cmd = [str(script)] if script.exists() else [sys.executable, "-m", "mcphost.host.cli"]
        argv = [*cmd, "--home", str(home), "serve", "--no-environment"]
        self.proc = subprocess.Popen(
            [
                *argv,
                "--plugin-dir",
                str(plugins),
                "--http",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        self.port, self.metrics = 0, ""
        deadline = time.monotonic() + 60
        while not (self.port and self.metrics) and time.monotonic() < deadline:
            line = self.proc.stderr.readline().decode(errors="replace")
            if not line:
                raise RuntimeError("mcphost serve --http ended before it served")
            if m := re.search(r"serving MCP at http://[^ ]*:(\d+)/", line):
                self.port = int(m.group(1))
            if m := re.search(r"serving metrics at (http://\S+)", line):
                self.metrics = m.group(1).rstrip("/")
        if not (self.port and self.metrics):
            raise RuntimeError("mcphost serve --http did not say where it serves")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def counter(self, name: str) -> float:
        """The sum of a metric's samples on the server's /metrics."""
        url = self.metrics if self.metrics.endswith("/metrics") else self.metrics + "/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)
        )

    def send_buffer(self) -> int:
        """The kernel send buffer of the server's established connection (``ss``), 0 if
        unknown."""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["ss", "-tmnH", "state", "established", f"sport = :{self.port}"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
            return max((int(x) for x in re.findall(r"\btb(\d+)", out)), default=0)
        return 0

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Sampler(threading.Thread):
    """Samples a server's RSS every 10 ms (the peak where VmHWM cannot be reset) and
    its connection's send buffer every 0.5 s, until stopped."""

    def __init__(self, serve: _Serve) -> None:
        import psutil

        super().__init__(daemon=True)
        self.serve = serve
        self.process = psutil.Process(serve.proc.pid)
        self.gone = psutil.Error
        self.rss = [self.process.memory_info().rss]
        self.times = [time.monotonic()]
        self.sndbuf = 0
        self.done = threading.Event()

    def run(self) -> None:
        k = 0
        while not self.done.wait(0.01):
            with contextlib.suppress(self.gone):
                self.rss.append(self.process.memory_info().rss)
                self.times.append(time.monotonic())
            k += 1
            if k % 50 == 0:
                self.sndbuf = max(self.sndbuf, self.serve.send_buffer())

    def stop(self) -> None:
        self.done.set()
        self.join()


def _sse_call(
    port: int, token: str, tool: str, n: int, size: int, slow_for: float
) -> dict[str, Any]:
    """One ``tools/call`` of ``tool`` over streamable HTTP (protocol 2026-07-28, partial
    results asked for), its SSE answer read through h11 from a plain socket. For the
    first ``slow_for`` seconds the reader has a small receive buffer and sleeps after
    every read, so the kernel's window closes and TCP backpressure reaches the server.
    Checks every partial result arrives once and in order, then the final result."""
    import h11

    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"partialResults": {}},
        "partialResultToken": "bench",
        "progressToken": "bench",
    }
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": tool, "arguments": {"n": n, "size": size}, "_meta": meta},
        }
    ).encode()
    headers = [
        ("Host", f"127.0.0.1:{port}"),
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Authorization", f"Bearer {token}"),
        ("Content-Length", str(len(body))),
    ]
    sock = socket.socket()
    if slow_for > 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
    sock.settimeout(60)
    sock.connect(("127.0.0.1", port))
    conn = h11.Connection(our_role=h11.CLIENT)
    sock.sendall(conn.send(h11.Request(method="POST", target="/mcp", headers=headers)))
    sock.sendall(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
    t0 = time.perf_counter()
    slow_until = time.monotonic() + slow_for
    expected = progress = slow_items = slow_bytes = read = 0
    buf = b""
    final: dict[str, Any] | None = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            slow = time.monotonic() < slow_until
            data = sock.recv(SLOW_RECV if slow else 1 << 18)
            read += len(data)
            if slow:
                time.sleep(SLOW_PAUSE)
                slow_items, slow_bytes = expected, read
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Response):
            kind = dict(event.headers).get(b"content-type", b"")
            if event.status_code != 200 or not kind.startswith(b"text/event-stream"):
                raise RuntimeError(f"the call got {event.status_code} {kind!r}, not SSE")
        elif isinstance(event, h11.Data):
            buf += event.data
            *events, buf = buf.split(b"\n\n")
            for ev in events:
                msg = json.loads(ev.partition(b"data: ")[2])
                params = msg.get("params", {})
                if msg.get("method") == "notifications/tools/partial_result":
                    seq, item = params["seq"], params["structuredContent"]
                    if seq != expected or item["i"] != seq:
                        raise RuntimeError(f"item {expected} arrived as {seq} ({item['i']})")
                    expected += 1
                elif msg.get("method") == "notifications/progress":
                    if not progress < params["progress"] <= n:
                        raise RuntimeError(f"progress {params['progress']} after {progress}")
                    progress = params["progress"]
                elif msg.get("id") == 2:
                    final = msg
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            break
    took = time.perf_counter() - t0
    sock.close()
    if final is None or "result" not in final or final["result"].get("isError"):
        raise RuntimeError(f"the stream did not complete: {str(final)[:300]}")
    blocks = final["result"]["content"]
    # One text block an item, or all of them in one block past catalog.MAX_TEXT_BLOCKS.
    whole = (
        [json.loads(b["text"]) for b in blocks]
        if len(blocks) == n
        else json.loads(blocks[0]["text"])
    )
    if expected != n or [item["i"] for item in whole] != list(range(n)):
        raise RuntimeError(
            f"{expected} partial results and a result of {len(whole)} items, not {n}"
        )
    return {"seconds": took, "slow_items": slow_items, "slow_bytes": slow_bytes, "bytes": read}


async def slow_http(tmp: Path, n: int, slow_for: float) -> list[Row]:
    """``mcphost serve --http`` streaming n items of ``size`` bytes to a client that reads
    its SSE answer fast, then (a fresh server) to one that reads slowly for ``slow_for``
    seconds: the server's peak RSS growth in each, against the bound of its buffers."""
    size = 300
    plugins = _plugin_dir(tmp, "bhttp")
    runs: dict[str, tuple[dict[str, Any], float, float, float, int]] = {}
    for label, slow in (("fast", 0.0), ("slow", slow_for)):
        serve = _Serve(tmp, label, plugins)
        try:
            # A first call starts the worker and imports what a call needs.
            await asyncio.to_thread(
                _sse_call, serve.port, serve.token, "bhttp.padded", 100, size, 0
            )
            sampler = _Sampler(serve)
            reset = reset_peak_rss(serve.proc.pid)
            sampler.start()
            stretch_end = time.monotonic() + slow
            try:
                got = await asyncio.to_thread(
                    _sse_call, serve.port, serve.token, "bhttp.padded", n, size, slow
                )
            finally:
                sampler.stop()
            base, sndbuf = sampler.rss[0], sampler.sndbuf
            during = [r for r, t in zip(sampler.rss, sampler.times, strict=True) if t < stretch_end]
            peak = peak_rss(serve.proc.pid) if reset else max(sampler.rss)
            pauses = await asyncio.to_thread(
                serve.counter, "mcphost_stream_backpressure_events_total"
            )
            got["stretch_peak"] = max(during) - base
            runs[label] = (got, peak - base, base, pauses, sndbuf)
        finally:
            serve.close()
    fast, grow_fast, base_fast, fast_pauses, _ = runs["fast"]
    slow, grow_slow, base_slow, pauses, sndbuf = runs["slow"]
    high, window = HTTP_STREAMING["high_watermark"], HTTP_WINDOW
    event = size * 2 + 200  # one partial result as an SSE event: the item twice, framing
    item = size + 40
    buffers = HTTP_OUTBOX + event + HTTP_TRANSPORT + event + 2 * (high + window + item)
    bound = grow_fast + buffers + 8 * MIB
    ahead = HTTP_OUTBOX + HTTP_TRANSPORT + (sndbuf or 4 * MIB) + SLOW_RCVBUF * 2 + high + window
    wire = fast["bytes"] / MIB
    return [
        {
            "name": f"serve --http, {n:,} items of {size} B as partial results over SSE, "
            "read fast (baseline)",
            "value": grow_fast / MIB,
            "unit": "MiB server peak RSS growth",
            "detail": f"{fast['seconds']:.1f}s, {n / fast['seconds']:,.0f} items/s, "
            f"{wire:.1f} MiB of SSE; {fast_pauses:.0f} pauses of the producer; RSS before "
            f"{base_fast / MIB:.0f} MiB",
            "note": "the final complete result keeps and encodes every item: that part of "
            "the growth is the same read fast or slowly",
        },
        {
            "name": f"serve --http, the same stream read slowly for {slow_for:g}s "
            f"({slow['slow_items']:,} items, {slow['slow_bytes'] / MIB:.1f} MiB through a "
            f"{SLOW_RCVBUF // 1024} KiB receive buffer), then without pauses",
            "value": grow_slow / MIB,
            "unit": "MiB server peak RSS growth",
            "target": f"<= {bound / MIB:.1f} MiB",
            "passed": grow_slow <= bound,
            "detail": f"{slow['seconds']:.1f}s; all {n:,} items once and in order, stream "
            f"complete; {pauses:.0f} pauses of the producer; server send buffer "
            f"{sndbuf / 1024:.0f} KiB; RSS before {base_slow / MIB:.0f} MiB, +"
            f"{slow['stretch_peak'] / MIB:.1f} MiB at most during the slow stretch (sampled "
            "every 10 ms; the items kept for the result so far included)",
            "note": f"bound: the fast row's growth + outbox {HTTP_OUTBOX // 1024} KiB + one "
            f"event + transport high water {HTTP_TRANSPORT // 1024} KiB + one event + "
            f"2 x (high {high // 1024} KiB + window {window // 1024} KiB + one item) + 8 MiB "
            "(socket buffers are kernel memory, outside RSS: they only let the server run "
            f"ahead of the reader, by at most {ahead / MIB:.1f} MiB here)",
        },
    ]


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
    if only in ("", "slow_http"):
        rows += await slow_http(tmp, 20_000 if quick else 50_000, 6.0 if quick else 30.0)
    if only in ("", "admission"):
        rows += await admission(tmp, [20, 90, 180] if quick else [50, 100, 180])
    return rows


if __name__ == "__main__":
    # Prints the rows (benchmarks/run.py writes the results files); --only runs one part.
    part = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else ""
    if part not in ("", "throughput", "slow", "slow_http", "admission"):
        sys.exit(f"--only takes throughput, slow, slow_http or admission, not {part!r}")
    tmp_dir = Path(tempfile.mkdtemp(prefix="mcphost-bench-flow-"))
    try:
        for row in asyncio.run(_run("--quick" in sys.argv, tmp_dir, part)):
            print(row)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
