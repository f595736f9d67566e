"""``mcphost demo``: the product end to end in a throw-away home, with timings.

It makes a throw-away signing key and trusts it, builds and signs wheels of the example
plugins (and a second textkit version), installs them with ``mcphost plugin install``,
lists the tools, calls several through sandboxed workers, consumes a stream, shows a
crash being contained, hot-swaps textkit under load and rolls it back
(:mod:`.demo_swap`), adds and runs a composition and shows a swap that would break it
refused (:mod:`.demo_compose`), runs 64 callers of a batch tool with batching off and
on and lets a high-priority call overtake a queue (:mod:`.demo_batch`), and prints a
short summary.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcphost.sandbox.jail import available_backends, choose_backend
from mcphost.sdk.errors import MCPHostError, PluginError, RegistryError
from mcphost.security import Permissions, TrustStore, generate_key, sign_wheel

from .config import load_config
from .demo_batch import CALLERS, batching_act
from .demo_compose import BREAKING_VERSION, breaking_textkit, composition_act
from .demo_swap import NEW_VERSION, OLD_VERSION, SUFFIX, hot_swap_under_load
from .examples import EXAMPLES, build_wheels, copy_example, find_examples
from .home import Home
from .host import Host

__all__ = ["find_examples", "run_demo"]


class Printer:
    """Sections and indented lines, to ``out``; remembers when the demo started."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out
        self.t0 = time.perf_counter()

    def step(self, title: str) -> None:
        self.out(f"\n== {title}")

    def line(self, text: str) -> None:
        self.out(f"   {text}")


class HostLog(logging.Handler):
    """Keeps the host's own log lines off the demo's output while the demo runs.

    A warning such as the one for the worker the demo kills on purpose would break into
    the demo's lines and repeat what the next line says. Unless ``-v`` asked for the
    log (the ``mcphost`` logger logs INFO or below), its lines are kept here instead and
    shown after the demo only if the demo fails.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self.logger = logging.getLogger("mcphost")
        self._propagate = self.logger.propagate
        self.active = self.logger.getEffectiveLevel() > logging.INFO
        if self.active:
            self.logger.addHandler(self)
            self.logger.propagate = False

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def restore(self, failed: bool) -> None:
        """Give the log back to its handlers; after a failure, show what was kept."""
        if not self.active:
            return
        self.logger.removeHandler(self)
        self.logger.propagate = self._propagate
        self.active = False
        if failed and self.lines:
            print("the host's log during the demo:", *self.lines, sep="\n", file=sys.stderr)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def _timed(coro: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    value = await coro
    return value, time.perf_counter() - t0


def _mcphost() -> list[str]:
    """The ``mcphost`` command of this environment."""
    script = Path(sys.executable).with_name("mcphost")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from mcphost.host.cli import main; main()"]


async def mcphost_cli(home: Home, *args: str) -> Any:
    """Run ``mcphost --home HOME ARGS --json`` as its own process, as an operator would;
    return its JSON output. A failure is an error carrying the command's message."""
    proc = await asyncio.create_subprocess_exec(
        *_mcphost(),
        "--home",
        str(home.root),
        *args,
        "--json",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RegistryError(
            f"`mcphost {' '.join(args)}` failed (exit status {proc.returncode}): "
            + (err.decode(errors="replace").strip()[-1500:] or "no message")
        )
    return json.loads(out)


def _isolation(p: Printer, isolation: str) -> str:
    """Say which isolation the workers get; warn clearly when it is not bubblewrap."""
    backend = choose_backend(isolation)
    if backend.level == "namespaces":
        p.line(f"isolation: {backend.name} (namespaces, rlimits); every plugin in its own jail")
        return backend.name
    why = next((b.available()[1] for b in available_backends() if b.name == "bwrap"), "")
    if isolation == "auto":
        p.line(f"WARNING: bubblewrap cannot run here: {why or 'it is not built in'}.")
    else:
        p.line(f"WARNING: isolation is set to {isolation!r}.")
    p.line(f"Plugins run with isolation {backend.name!r} only: rlimits and a clean environment,")
    p.line("but no namespaces (no jail for files, network or other processes).")
    if isolation == "auto":
        p.line("Install bubblewrap for the full sandbox; `mcphost doctor` says what runs here.")
    return backend.name


async def _build_and_sign(p: Printer, examples: Path, h: Home, work: Path) -> dict[str, Path]:
    """A throw-away key trusted in ``h``; signed wheels of the examples and of textkit
    ``NEW_VERSION``, keyed by plugin name (and ``textkit-NEW_VERSION``)."""
    p.step("a signing key, and signed wheels of the example plugins")
    t0 = time.perf_counter()
    key = generate_key()
    TrustStore(h.keys_dir).trust(key.public_key.pem(), "mcphost demo (throw-away)")
    dt = time.perf_counter() - t0
    p.line(f"generated key {key.key_id} and trusted it in this home  [{ms(dt)}]")

    projects = {n: copy_example(examples / n, work / "src" / n) for n in EXAMPLES}
    newer = f"textkit-{NEW_VERSION}"
    projects[newer] = copy_example(
        examples / "textkit", work / "src" / newer, version=NEW_VERSION, echo_suffix=SUFFIX
    )
    breaking = f"textkit-{BREAKING_VERSION}"
    projects[breaking] = breaking_textkit(
        copy_example(examples / "textkit", work / "src" / breaking, version=BREAKING_VERSION)
    )
    t0 = time.perf_counter()
    built = await asyncio.to_thread(build_wheels, projects, work / "wheels")
    p.line(f"built {len(built)} wheels with pip  [{ms(time.perf_counter() - t0)}]")
    p.line(f"  textkit {NEW_VERSION} is textkit {OLD_VERSION} whose echo appends {SUFFIX!r}")
    p.line(f"  textkit {BREAKING_VERSION}'s upper takes `value` instead of `text`")

    t0 = time.perf_counter()
    signed = {
        name: sign_wheel(
            wheel,
            key,
            permissions=Permissions(),
            sequence=3 if name == breaking else 2 if name == newer else 1,
            out=work / "signed",
        )
        for name, wheel in built.items()
    }
    p.line(f"signed them, asking for no permissions  [{ms(time.perf_counter() - t0)}]")
    return signed


async def _install(p: Printer, h: Home, wheels: dict[str, Path]) -> None:
    """Install every wheel through the registry with the real CLI; textkit's second
    version beside the first, not activated."""
    p.step("installs through the registry (each command its own process)")
    for name, wheel in wheels.items():
        extra = ["--no-activate"] if name.startswith("textkit-") else []
        shown = " ".join(["mcphost plugin install", wheel.name, "--yes", *extra])
        res, dt = await _timed(mcphost_cli(h, "plugin", "install", str(wheel), "--yes", *extra))
        state = "active" if res["active"] else "installed beside, not active"
        p.line(f"$ {shown}  [{ms(dt)}]")
        p.line(f"  {res['plugin']} {res['version']}: {state}; {len(res['tools'])} tools")
    plugins = await mcphost_cli(h, "plugin", "list")
    for pl in plugins:
        versions = ", ".join(f"{v} (active)" if v == pl["active"] else v for v in pl["versions"])
        p.line(f"registry: {pl['name']} {versions}")


async def run_demo(
    out: Callable[[str], None] = print,
    *,
    examples: Path | None = None,
    home: Path | None = None,
    keep: bool = False,
    isolation: str | None = None,
) -> dict[str, Any]:
    """Run the demo; returns the figures it printed (for tests and the exit status)."""
    p = Printer(out)
    examples_dir = find_examples(examples)
    root = Path(tempfile.mkdtemp(prefix="mcphost-demo-")) if home is None else home
    figures: dict[str, Any] = {"home": str(root)}
    work = Path(tempfile.mkdtemp(prefix="mcphost-demo-build-"))
    host_log = HostLog()
    failed = True
    try:
        h = Home(root).ensure()
        if isolation is not None:
            # The install commands start each plugin once too: same backend as the host.
            h.config_file.write_text(f'isolation = "{isolation}"\n')
        p.step(f"mcphost demo in a throw-away home: {h.root}")
        figures["isolation"] = _isolation(p, isolation or load_config(h.config_file).isolation)
        wheels = await _build_and_sign(p, examples_dir, h, work)
        await _install(p, h, wheels)

        t0 = time.perf_counter()
        async with Host(h, environment=False, isolation=isolation) as host:
            p.step("plugins and their tools")
            p.line(
                f"host ready with {len(host.plugins())} plugins from the registry in "
                f"{ms(time.perf_counter() - t0)}; each runs in its own sandboxed worker"
            )
            for t in host.tools():
                kind = " [stream]" if t.kind == "stream" else ""
                desc = t.description.splitlines()[0] if t.description else ""
                p.line(f"{t.name:<22} {desc}{kind}")
            figures["tools"] = len(host.tools())

            await _calls(p, host, figures)

            figures["swap"] = await hot_swap_under_load(p, host, h, mcphost_cli)

            figures["composition"] = await composition_act(p, host, h, work, ms)

            figures["batching"] = await batching_act(p, host, ms)

            await _latency(p, host, figures)

            p.step("summary")
            for s in host.stats():
                memory = (
                    f"{s['memory_mb']} MiB of memory ({s['memory_source']})"
                    if "memory_mb" in s
                    else "memory not read yet"
                )
                p.line(
                    f"{s['plugin']} {s['version']}: {s['state']}, pid {s['pid']}, "
                    f"{s.get('calls', 0)} calls, {s['restarts']} restarts, {memory}"
                )
            sw = figures["swap"]
            p.line(
                f"hot swap under load: {sw['calls']:,} calls by {sw['callers']} callers, "
                f"{sw['failed']} failed; swap {ms(sw['swap_s'])}, rollback "
                f"{ms(sw['rollback_s'])} (command start to the other version answering)"
            )
            comp = figures["composition"]
            p.line(
                "composition demo.report: added, run with a trace, served by the running "
                f"host; the breaking swap {'refused' if comp['refused'] else 'NOT refused'}"
            )
            bt = figures["batching"]
            p.line(
                f"batching: {bt['speedup']:.1f}x the calls/s with {CALLERS} callers "
                f"(p99 {ms(bt['on_p99_s'])} on, {ms(bt['off_p99_s'])} off; batches of up "
                f"to {bt['largest_batch']}); a priority-0 call overtook {bt['overtaken']} "
                "queued calls"
            )
            p.line(
                f"textkit.echo p50 {figures['echo_p50_ms']:.3f} ms; "
                f"{figures['pipelined_per_s']:,.0f} calls/s pipelined; isolation "
                f"{figures['isolation']}"
            )
        figures["seconds"] = time.perf_counter() - p.t0
        p.line(f"all workers stopped; demo took {ms(figures['seconds'])}")
        if keep:
            p.line(f"the home is kept: mcphost --home {h.root} plugin info textkit")
        failed = False
        return figures
    finally:
        host_log.restore(failed)
        shutil.rmtree(work, ignore_errors=True)
        if not keep and home is None:
            shutil.rmtree(root, ignore_errors=True)


async def _calls(p: Printer, host: Host, figures: dict[str, Any]) -> None:
    """Plain calls, a stream, clear errors, and a killed worker being replaced."""
    p.step("calls through sandboxed workers")
    calls: list[tuple[str, dict[str, Any]]] = [
        ("textkit.upper", {"text": "hello from a sandbox"}),
        ("textkit.slugify", {"text": "Héllo, Wörld: MCP plugins!"}),
        ("textkit.count", {"text": "one two three\nfour"}),
        ("mathkit.stats", {"values": [2, 4, 4, 4, 5, 5, 7, 9]}),
        ("mathkit.is_prime", {"n": 1_000_003}),
        ("notes.save", {"title": "demo", "body": "kept in the plugin's data dir"}),
        ("notes.read", {"title": "demo"}),
    ]
    for name, args in calls:
        value, dt = await _timed(host.call(name, args))
        p.line(f"{name}({_short(args)}) -> {_short(value)}  [{ms(dt)}]")

    p.step("a stream with backpressure: textkit.count_to(n=10)")
    items: list[Any] = []
    t0 = time.perf_counter()
    async for item in host.stream("textkit.count_to", {"n": 10}, window=4):
        items.append(item)
    p.line(f"received {items} in {ms(time.perf_counter() - t0)}")
    figures["stream_items"] = len(items)
    await _flow(p, host, figures)

    p.step("errors are clear and contained")
    for name, args in (
        ("textkit.upper", {"text": 42}),
        ("mathkit.stats", {"values": []}),
        ("textkit.nope", {}),
    ):
        try:
            await host.call(name, args)
        except MCPHostError as exc:
            p.line(f"{name}: [{exc.code}] {exc.message}")

    victim = asyncio.create_task(host.call("textkit.sleep", {"seconds": 10}))
    await asyncio.sleep(0.2)
    worker = host._supervisors["textkit"].worker
    if worker is None:
        raise PluginError("textkit has no running worker for the demo to kill")
    p.line(
        f"the demo kills textkit's worker (pid {worker.pid}) with SIGKILL while "
        "textkit.sleep(seconds=10) runs, as a crash would"
    )
    # Told why, the host reports this kill as what it is, not as a guess at its cause.
    worker.kill("was killed by `mcphost demo` on purpose (SIGKILL)")
    try:
        await victim
    except MCPHostError as exc:
        p.line(f"worker killed mid-call -> [{exc.code}] {exc.message}")
    value, dt = await _timed(host.call("textkit.upper", {"text": "back again"}))
    p.line(f"next call after the crash -> {value!r} [{ms(dt)}, restarted worker]")


async def _flow(p: Printer, host: Host, figures: dict[str, Any]) -> None:
    """A slow consumer paused at the watermarks, and an admission queue by priority
    (docs/streaming.md), with small [streaming] settings applied live."""
    running = host.config
    high, low, window = 2048, 512, 1024
    host.reconfigure(
        running.model_copy(
            update={
                "streaming": running.streaming.model_copy(
                    update={
                        "high_watermark": high,
                        "low_watermark": low,
                        "window_bytes": window,
                        "max_concurrent": 1,
                    }
                )
            }
        )
    )
    try:
        p.step(
            f"a slow consumer: streaming.high_watermark {high} B, low_watermark {low} B, "
            f"window_bytes {window} B (applied live)"
        )
        n, got, peak, states = 2000, 0, 0, []
        async for item in host.stream("textkit.count_to", {"n": n}):
            if item != got:
                raise PluginError(f"item {got} arrived as {item}")
            got += 1
            if got % 200 == 0:
                await asyncio.sleep(0.01)  # the consumer dawdles; the producer must wait
                snap = host.flow.snapshot()
                peak = max(peak, snap[0]["buffered"])
                states.append(snap[0]["state"])
        stats = host.flow.metrics.tools["textkit.count_to"] if host.flow.metrics else None
        pauses = stats.pauses if stats is not None else states.count("paused")
        p.line(
            f"{got} items, every one in order; the producer was paused {pauses} times; "
            f"buffered at most {peak} B (bound: high + window + one item)"
        )
        figures["stream_pauses"] = pauses

        p.step("admission by priority: streaming.max_concurrent = 1, preempt = true")
        order: list[str] = []

        async def one(label: str, prio: int, args: dict[str, Any]) -> None:
            async for _ in host.stream("textkit.count_to", args, priority=prio):
                pass
            order.append(label)

        first = asyncio.create_task(one("running (priority 5)", 5, {"n": 100, "delay": 0.005}))
        await asyncio.sleep(0.05)
        low_t = asyncio.create_task(one("low (priority 9, came first)", 9, {"n": 3}))
        await asyncio.sleep(0.01)
        high_t = asyncio.create_task(
            one("high (priority 0, came second)", 0, {"n": 5, "delay": 0.03})
        )
        await asyncio.sleep(0.01)
        for row in host.streams():
            p.line(f"  {row['state']:9} {row['tool']} priority {row['priority']}")
        await asyncio.gather(first, low_t, high_t)
        p.line("finished in this order: " + ", ".join(order))
        figures["admission_order"] = order
    finally:
        host.reconfigure(running)


async def _latency(p: Printer, host: Host, figures: dict[str, Any]) -> None:
    p.step("latency")
    lat = []
    for _ in range(300):
        _, dt = await _timed(host.call("textkit.echo", {"text": "x"}))
        lat.append(dt)
    lat.sort()
    figures["echo_p50_ms"] = statistics.median(lat) * 1000
    t0 = time.perf_counter()
    await asyncio.gather(*(host.call("textkit.echo", {"text": "x"}) for _ in range(2000)))
    rate = 2000 / (time.perf_counter() - t0)
    figures["pipelined_per_s"] = rate
    p.line(
        f"textkit.echo: p50 {figures['echo_p50_ms']:.3f} ms, "
        f"p99 {lat[int(len(lat) * 0.99)] * 1000:.3f} ms sequential; "
        f"{rate:,.0f} calls/s with 2000 in flight"
    )


def _short(value: Any, limit: int = 70) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
