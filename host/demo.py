"""``mcphost demo``: the product end to end in a throw-away home, with timings.

It builds wheels of the example plugins, installs them, lists their tools, calls several
through sandboxed workers, consumes a stream, shows a crash being contained, and prints a
short summary.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcphost.sdk.errors import ConfigError, MCPHostError

from .home import Home
from .host import Host

__all__ = ["find_examples", "run_demo"]

EXAMPLES = ("textkit", "mathkit", "notes")


def find_examples(explicit: Path | None = None) -> Path:
    """The example_plugins folder: given, ``$MCPHOST_EXAMPLES``, ./example_plugins, or the
    source checkout this module runs from."""
    candidates = [
        explicit,
        Path(os.environ["MCPHOST_EXAMPLES"]) if os.environ.get("MCPHOST_EXAMPLES") else None,
        Path.cwd() / "example_plugins",
        Path(__file__).resolve().parents[1] / "example_plugins",
    ]
    for c in candidates:
        if c is not None and all((c / n / "pyproject.toml").is_file() for n in EXAMPLES):
            return c
    raise ConfigError(
        "cannot find the example plugins (example_plugins/ with textkit, mathkit, notes); "
        "run `mcphost demo` from the root of the mcphost checkout or pass --examples DIR"
    )


def _can_build_offline() -> bool:
    """Whether setuptools here can build a wheel without fetching build dependencies."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    try:
        setuptools_version = Version(version("setuptools"))
    except PackageNotFoundError:
        return False
    if setuptools_version >= Version("70.1"):
        return True
    try:
        version("wheel")
    except PackageNotFoundError:
        return False
    return True


def build_wheels(examples: Path, out: Path, names: tuple[str, ...] = EXAMPLES) -> dict[str, Path]:
    """Build real wheels of the example plugins with pip."""
    out.mkdir(parents=True, exist_ok=True)
    isolation = ["--no-build-isolation"] if _can_build_offline() else []
    wheels: dict[str, Path] = {}
    for name in names:
        before = set(out.glob("*.whl"))
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "--disable-pip-version-check",
            "-q",
            "wheel",
            "--no-deps",
            *isolation,
            "-w",
            str(out),
            str(examples / name),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ConfigError(f"building the {name} example wheel failed:\n{proc.stderr[-2000:]}")
        new = set(out.glob("*.whl")) - before
        wheels[name] = new.pop() if new else next(out.glob(f"*{name}*.whl"))
    return wheels


def install_into_dirs(wheels: dict[str, Path], root: Path) -> list[Path]:
    """Install each wheel into its own directory (the registry-less way)."""
    dirs = []
    for name, wheel in wheels.items():
        target = root / name
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "--disable-pip-version-check",
            "-q",
            "install",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ConfigError(f"installing {wheel.name} failed:\n{proc.stderr[-2000:]}")
        dirs.append(target)
    return dirs


class _Printer:
    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out
        self.t0 = time.perf_counter()

    def step(self, title: str) -> None:
        self.out(f"\n== {title}")

    def line(self, text: str) -> None:
        self.out(f"   {text}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def _timed(coro: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    value = await coro
    return value, time.perf_counter() - t0


async def run_demo(
    out: Callable[[str], None] = print,
    *,
    examples: Path | None = None,
    home: Path | None = None,
    keep: bool = False,
    isolation: str | None = None,
) -> dict[str, Any]:
    """Run the demo; returns the figures it printed (for tests)."""
    p = _Printer(out)
    examples_dir = find_examples(examples)
    root = Path(tempfile.mkdtemp(prefix="mcphost-demo-")) if home is None else home
    figures: dict[str, Any] = {"home": str(root)}
    try:
        h = Home(root).ensure()
        p.step(f"mcphost demo in a throw-away home: {h.root}")
        t0 = time.perf_counter()
        wheels = build_wheels(examples_dir, h.root / "wheels")
        p.line(
            f"built {len(wheels)} example wheels in {_ms(time.perf_counter() - t0)}: "
            + ", ".join(w.name for w in wheels.values())
        )
        t0 = time.perf_counter()
        dirs = install_into_dirs(wheels, h.root / "plugins")
        p.line(f"installed them in {_ms(time.perf_counter() - t0)}")

        t0 = time.perf_counter()
        async with Host(
            h, plugin_dirs=dirs, environment=False, registry=False, isolation=isolation
        ) as host:
            backend = host._env.backend if host._env else None
            p.step("plugins and their tools")
            p.line(
                f"isolation: {backend.name if backend else '?'}; host ready with "
                f"{len(host.plugins())} plugins in {_ms(time.perf_counter() - t0)}"
            )
            for t in host.tools():
                kind = " [stream]" if t.kind == "stream" else ""
                desc = t.description.splitlines()[0] if t.description else ""
                p.line(f"{t.name:<22} {desc}{kind}")
            figures["tools"] = len(host.tools())

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
                p.line(f"{name}({_short(args)}) -> {_short(value)}  [{_ms(dt)}]")

            p.step("a stream with backpressure: textkit.count_to(n=10)")
            items: list[Any] = []
            t0 = time.perf_counter()
            async for item in host.stream("textkit.count_to", {"n": 10}, window=4):
                items.append(item)
            p.line(f"received {items} in {_ms(time.perf_counter() - t0)}")
            figures["stream_items"] = len(items)

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
            pid = next(s["pid"] for s in host.stats() if s["plugin"] == "textkit")
            os.kill(pid, signal.SIGKILL)
            try:
                await victim
            except MCPHostError as exc:
                p.line(f"worker killed mid-call -> [{exc.code}] {exc.message}")
            value, dt = await _timed(host.call("textkit.upper", {"text": "back again"}))
            p.line(f"next call after the crash -> {value!r} [{_ms(dt)}, restarted worker]")

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

            p.step("summary")
            for s in host.stats():
                p.line(
                    f"{s['plugin']} {s['version']}: {s['state']}, pid {s['pid']}, "
                    f"{s.get('calls', 0)} calls, {s['restarts']} restarts, "
                    f"{s.get('rss_mb', '?')} MiB"
                )
        p.line(f"all workers stopped; demo took {_ms(time.perf_counter() - p.t0)}")
        return figures
    finally:
        if not keep and home is None:
            shutil.rmtree(root, ignore_errors=True)


def _short(value: Any, limit: int = 70) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
