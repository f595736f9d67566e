"""The worker's side of the call path against the raw floor: no-op latency and
pipelined throughput, a payload sweep (100 B to 10 MB each way) and streams of sync and
async generators, each for the worker on uvloop and on the stdlib loop.

The worker is driven by a blocking client speaking the real protocol (no event loop on
the caller's side), so every figure is the worker's own cost over the raw floor's. The
paths are measured in interleaved rounds, cross core and same core, and every ratio is
the median of the per-round ratios (min-max beside it): the machines this project runs
on are shared, so only figures taken side by side compare.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_core import HEADER, RawCall, RawFloor, placements, thread_cpu

Row = dict[str, Any]

PLUGIN = '''
from mcphost.sdk import Context, Plugin

plugin = Plugin("wio")


@plugin.tool
def echo(text: str) -> str:
    """Return the text."""
    return text


@plugin.tool
def gen(n: int):
    """Yield 0..n-1 from a sync generator."""
    yield from range(n)


@plugin.tool
async def agen(n: int, ctx: Context):
    """Yield 0..n-1 from an async generator, reporting progress for each."""
    for i in range(n):
        ctx.progress(i + 1, n)
        yield i
'''

SIZES = (100, 10_000, 1_000_000, 10_000_000)
INFLIGHT = 64
LOOPS = ("uvloop", "asyncio")


class Driver:
    """A real worker for the ``wio`` plugin, driven by a blocking socket."""

    def __init__(
        self, plugin_dir: Path, tmp: Path, loop: str, script: str | None = None, tag: str = ""
    ) -> None:
        from mcphost.sandbox import RlimitBackend, WorkerSpec
        from mcphost.sandbox.protocol import FrameCodec, Hello, Welcome

        spec = WorkerSpec(
            plugin="wio",
            version="0",
            entry="wio_plugin:plugin",
            paths=[str(plugin_dir)],
            data_dir=str(tmp / "data" / (tag or loop)),
            work_dir=str(tmp / "run" / (tag or loop)),
        )
        os.makedirs(spec.work_dir, exist_ok=True)
        os.makedirs(spec.data_dir, exist_ok=True)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        plan = RlimitBackend().prepare(spec, theirs.fileno())
        argv = list(plan.argv)
        if script is not None:  # another worker program, to compare with
            i = argv.index("-m")
            argv[i : i + 2] = [script]
        self.proc = subprocess.Popen(
            argv,
            env={**plan.env, "MCPHOST_LOOP": loop},
            cwd=plan.cwd,
            pass_fds=plan.pass_fds,
            preexec_fn=plan.preexec_fn,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.sock = mine
        self.rf = mine.makefile("rb", buffering=1 << 20)
        self.codec = FrameCodec()
        hello = self.recv()
        if not isinstance(hello, Hello):
            raise RuntimeError(f"the worker sent {hello!r} instead of Hello")
        self.sock.sendall(self.codec.encode(Welcome(version=max(hello.versions))))
        self.ids = 0

    def recv(self) -> Any:
        head = self.rf.read(4)
        if len(head) < 4:
            raise RuntimeError("the worker closed its channel")
        return self.codec.decode(self.rf.read(self.codec.body_length(head)))

    def send_call(self, tool: str, args: dict[str, Any], **kw: Any) -> int:
        from mcphost.sandbox.protocol import Call

        self.ids += 1
        self.sock.sendall(self.codec.encode(Call(id=self.ids, tool=tool, args=args, **kw)))
        return self.ids

    def call(self, text: str) -> Any:
        self.send_call("echo", {"text": text}, timeout=60.0)
        return self.recv()

    def pipelined(self, total: int) -> float:
        t0 = time.perf_counter()
        sent = 0
        for _ in range(min(INFLIGHT, total)):
            self.send_call("echo", {"text": "x"}, timeout=60.0)
            sent += 1
        for _ in range(total):
            self.recv()
            if sent < total:
                self.send_call("echo", {"text": "x"}, timeout=60.0)
                sent += 1
        return total / (time.perf_counter() - t0)

    def stream(self, tool: str, n: int, window: int = 256) -> tuple[float, int]:
        """Items per second of a stream of ``n`` items, and the frames it took."""
        from mcphost.sandbox.protocol import Credit, Items, Progress, StreamEnd, StreamItem

        t0 = time.perf_counter()
        call_id = self.send_call(tool, {"n": n}, stream=True, window=window, timeout=600.0)
        frames = got = consumed = 0
        while True:
            frame = self.recv()
            frames += 1
            if isinstance(frame, StreamItem | Items):
                # Protocol 4 carries several items in one Items frame.
                k = len(frame.values) if isinstance(frame, Items) else 1
                got += k
                consumed += k
                if consumed >= window // 2:
                    self.sock.sendall(self.codec.encode(Credit(id=call_id, n=consumed)))
                    consumed = 0
            elif isinstance(frame, StreamEnd):
                break
            elif not isinstance(frame, Progress):
                raise RuntimeError(f"stream answered {frame!r}")
        assert got == n, (got, n)
        return n / (time.perf_counter() - t0), frames

    def close(self) -> None:
        from mcphost.sandbox.protocol import Shutdown

        with contextlib.suppress(OSError):
            self.sock.sendall(self.codec.encode(Shutdown()))
        self.rf.close()
        self.sock.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def raw_call(raw: RawFloor, text: str) -> Any:
    """One raw-floor round trip carrying ``text`` each way."""
    raw.ids += 1
    body = raw.enc.encode(RawCall(id=raw.ids, tool="echo", args={"text": text}))
    raw.sock.sendall(HEADER.pack(len(body)) + body)
    (n,) = HEADER.unpack(raw.rf.read(4))
    return raw.dec.decode(raw.rf.read(n))


def p50(fn: Callable[[], Any], n: int) -> float:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def summary(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def run(quick: bool) -> list[Row]:
    tmp = Path(tempfile.mkdtemp(prefix="mcphost-bench-wio-"))
    try:
        (tmp / "plugin").mkdir()
        (tmp / "plugin" / "wio_plugin.py").write_text(PLUGIN)
        return _run(quick, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(quick: bool, tmp: Path) -> list[Row]:
    rounds = 3 if quick else 5
    calls = 500 if quick else 3000
    total = 3000 if quick else 20000
    items = 100_000 if quick else 1_000_000
    rows: list[Row] = []
    raw = RawFloor()
    drivers = {loop: Driver(tmp / "plugin", tmp, loop) for loop in LOOPS}
    try:
        pids = [raw.proc.pid, *(d.proc.pid for d in drivers.values())]
        for d in drivers.values():  # warm up: echo learns it is fast and runs inline
            for _ in range(200):
                d.call("x")
        for where in placements():
            with where.applied(pids):
                rows += _call_rows(where.label, raw, drivers, rounds, calls, total)
                rows += _payload_rows(where.label, raw, drivers, rounds, quick)
        where = placements()[0]
        with where.applied(pids):
            rows += _stream_rows(where.label, drivers, items, rounds=1 if quick else 3)
    finally:
        raw.close()
        for d in drivers.values():
            d.close()
    return rows


def _call_rows(
    where: str, raw: RawFloor, drivers: dict[str, Driver], rounds: int, calls: int, total: int
) -> list[Row]:
    lat: dict[str, list[float]] = {k: [] for k in drivers}
    thr: dict[str, list[float]] = {k: [] for k in drivers}
    per = max(1, calls // rounds)
    for _ in range(rounds):
        floor = p50(lambda: raw.call("x"), per)
        floor_thr = raw.pipelined(total // rounds)
        for k, d in drivers.items():
            lat[k].append(p50(lambda d=d: d.call("x"), per) / floor)
            thr[k].append(d.pipelined(total // rounds) / floor_thr)
    rows: list[Row] = []
    for k in drivers:
        rows.append(
            {
                "name": f"worker ({k}) no-op p50 / raw floor, {where}",
                "value": statistics.median(lat[k]),
                "unit": "x",
                "range": summary(lat[k]),
            }
        )
        rows.append(
            {
                "name": f"worker ({k}) pipelined {INFLIGHT} in flight / raw floor, {where}",
                "value": statistics.median(thr[k]),
                "unit": "x",
                "range": summary(thr[k]),
            }
        )
    return rows


def _payload_rows(
    where: str, raw: RawFloor, drivers: dict[str, Driver], rounds: int, quick: bool
) -> list[Row]:
    rows: list[Row] = []
    for size in SIZES:
        text = "p" * size
        n = max(3, (200 if quick else 1000) * 100 // max(100, size // 100))
        n = min(n, 200 if quick else 1000)
        ratios: dict[str, list[float]] = {k: [] for k in drivers}
        floors = []
        for _ in range(rounds):
            floor = p50(lambda text=text: raw_call(raw, text), n)
            floors.append(floor)
            for k, d in drivers.items():
                ratios[k].append(p50(lambda d=d, text=text: d.call(text), n) / floor)
        for k in drivers:
            rows.append(
                {
                    "name": f"worker ({k}) echo of {_size(size)} each way / raw floor, {where}",
                    "value": statistics.median(ratios[k]),
                    "unit": "x",
                    "range": summary(ratios[k]),
                    "note": f"raw floor p50 {statistics.median(floors) * 1e6:,.0f} µs",
                    "target": "<= 1.4x",
                    "passed": statistics.median(ratios[k]) <= 1.4,
                }
            )
    return rows


def _stream_rows(where: str, drivers: dict[str, Driver], items: int, rounds: int) -> list[Row]:
    rows: list[Row] = []
    for tool, target in (("gen", 150_000), ("agen", 300_000)):
        for k, d in drivers.items():
            rates = []
            frames = 0
            cpu = 0.0
            for _ in range(rounds):
                before = sum(thread_cpu(d.proc.pid))
                rate, frames = d.stream(tool, items)
                cpu += sum(thread_cpu(d.proc.pid)) - before
                rates.append(rate)
            kind = "sync" if tool == "gen" else "async"
            rows.append(
                {
                    "name": f"worker ({k}) stream of {items:,} items, {kind} generator, {where}",
                    "value": statistics.median(rates),
                    "unit": "items/s",
                    "range": f"{min(rates):,.0f}-{max(rates):,.0f}",
                    "worker CPU": f"{cpu / (rounds * items) * 1e6:.2f} µs/item",
                    "note": f"{frames:,} frames for {items:,} items (no progress asked for)",
                    "target": f">= {target:,}",
                    "passed": statistics.median(rates) >= target,
                }
            )
    return rows


def _size(n: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("KB", 1_000)):
        if n >= scale:
            return f"{n // scale} {unit}"
    return f"{n} B"


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for row in run("--quick" in sys.argv):
        print(f"{row['name']:<75} {row['value']:>12,.2f} {row['unit']:<8} {row.get('range', '')}")
