"""Workers: what one costs in memory, and how long a restart and a swap take.

Built on real wheels of the example plugin textkit (``pip wheel``, then ``pip install
--target``), served by ``Host(..., environment=False, registry=False)`` with the
strongest isolation that runs here (bubblewrap when it does), unsigned plugins allowed.

- Memory: RSS and PSS (``psutil`` ``memory_full_info``) of an idle worker after one
  call, the worker's Python process alone and its whole jail (bubblewrap's processes
  included); then of 8 plugins' workers together (8 renamed copies of textkit), where
  PSS shows what the workers share (the interpreter, the libraries).
- Restart: a worker is killed (SIGKILL, as a crash would end it); the time from the kill
  to the first call answered by its replacement, with the default restart backoff
  (``backoff_initial``) included, and the backoff alone beside it.
- Swap: ``Host.activate`` of another version of a running plugin (textkit 1.0.0 <->
  1.1.0): verify and start the new worker, route to it, drain and stop the old one;
  then the first call answered by the new version.

    python benchmarks/bench_workers.py [--quick]

writes ``benchmarks/results/workers.md``; ``run(quick)`` returns the rows for a runner.
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
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "workers.md"
TEXTKIT = REPO / "example_plugins" / "textkit"
MIB = 1024 * 1024
PLUGINS = 8


def _copy(dest: Path, *, version: str = "1.0.0", name: str = "textkit") -> Path:
    """A copy of textkit's project at ``version``, renamed to plugin ``name``."""
    shutil.copytree(TEXTKIT, dest, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    module = "mcphost_textkit" if name == "textkit" else f"mcphost_{name}"
    pyproject = dest / "pyproject.toml"
    text = pyproject.read_text().replace('version = "1.0.0"', f'version = "{version}"')
    if name != "textkit":
        (dest / "mcphost_textkit").rename(dest / module)
        text = text.replace("mcphost-textkit", f"mcphost-{name}")
        text = text.replace('textkit = "mcphost_textkit:plugin"', f'{name} = "{module}:plugin"')
        text = text.replace('"mcphost_textkit"', f'"{module}"')
        code = dest / module / "__init__.py"
        code.write_text(code.read_text().replace('Plugin("textkit"', f'Plugin("{name}"'))
    pyproject.write_text(text)
    return dest


def _prepare(work: Path) -> dict[str, Path]:
    """Plugin directories: "1.0" and "1.1" (textkit), "many" (8 renamed copies)."""
    projects = [_copy(work / "src" / "v10")]
    projects += [_copy(work / "src" / f"tk{i}", name=f"tk{i}") for i in range(PLUGINS)]
    wheels = work / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels)]
    # Two versions of one distribution cannot be built in one pip run.
    subprocess.run([*build, *map(str, projects)], check=True)
    subprocess.run([*build, str(_copy(work / "src" / "v11", version="1.1.0"))], check=True)
    dirs = {"1.0": work / "v10", "1.1": work / "v11", "many": work / "many"}
    for key, pattern in (("1.0", "mcphost_textkit-1.0.0-*"), ("1.1", "mcphost_textkit-1.1.0-*")):
        (wheel,) = wheels.glob(pattern + ".whl")
        subprocess.run(
            [*pip, "install", "--no-deps", "--target", str(dirs[key]), str(wheel)], check=True
        )
    many = sorted(str(w) for w in wheels.glob("mcphost_tk*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(dirs["many"]), *many], check=True)
    home = work / "home"
    home.mkdir()
    (home / "config.toml").write_text("allow_unsigned = true\n")
    dirs["home"] = home
    return dirs


def _host(home: Path, *dirs: Path) -> Any:
    from mcphost.host import Host

    return Host(home, plugin_dirs=list(dirs), environment=False, registry=False)


def _workers() -> list[psutil.Process]:
    """The worker processes (Python running the worker module) under this process."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            # bubblewrap's own command line names the worker module too: skip it.
            if "mcphost.sandbox.worker" in " ".join(p.cmdline()) and "bwrap" not in p.name():
                out.append(p)
        except psutil.Error:
            pass
    return out


def _memory(procs: list[psutil.Process]) -> tuple[float, float]:
    rss = pss = 0
    for p in procs:
        info = p.memory_full_info()
        rss += info.rss
        pss += info.pss
    return rss / MIB, pss / MIB


def _jail(worker: psutil.Process) -> list[psutil.Process]:
    """The worker and the jail processes above it that exist only for it (bubblewrap)."""
    procs = [worker]
    me = os.getpid()
    parent = worker.parent()
    while parent is not None and parent.pid != me:
        procs.append(parent)
        parent = parent.parent()
    return procs


async def _measure_memory(dirs: dict[str, Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    host = _host(dirs["home"], dirs["1.0"])
    async with host:
        await host.call("textkit.echo", {"text": "x"})
        backend = host._env.backend.name if host._env is not None else "?"
        (worker,) = _workers()
        for what, procs in (("its Python process", [worker]), ("with its jail", _jail(worker))):
            rss, pss = _memory(procs)
            rows.append(_mem_row(f"idle worker ({backend}), {what}", rss, pss, len(procs)))
    host = _host(dirs["home"], dirs["many"])
    async with host:
        names = sorted(p.name for p in host.plugins())
        await asyncio.gather(*(host.call(f"{n}.echo", {"text": "x"}) for n in names))
        workers = _workers()
        assert len(workers) == PLUGINS, f"{len(workers)} workers for {PLUGINS} plugins"
        rss, pss = _memory(workers)
        rows.append(_mem_row(f"{PLUGINS} plugins' idle workers together", rss, pss, PLUGINS))
        jails = [p for w in workers for p in _jail(w)]
        rss, pss = _memory(jails)
        rows.append(
            _mem_row(f"{PLUGINS} plugins' idle workers with their jails", rss, pss, len(jails))
        )
    return rows


def _mem_row(name: str, rss: float, pss: float, count: int) -> dict[str, Any]:
    return {
        "name": f"memory: {name}",
        "value": pss,
        "unit": "MiB PSS",
        "rss MiB": rss,
        "processes": count,
    }


async def _measure_restart(dirs: dict[str, Path], samples: int) -> list[dict[str, Any]]:
    host = _host(dirs["home"], dirs["1.0"])
    times: list[float] = []
    async with host:
        await host.call("textkit.echo", {"text": "x"})
        backoff = host.config.backoff_initial
        for _ in range(samples):
            host.reset_plugin("textkit")  # forget earlier crashes: the first backoff applies
            (worker,) = _workers()
            t0 = time.perf_counter()
            os.kill(worker.pid, signal.SIGKILL)
            while True:
                try:
                    await host.call("textkit.echo", {"text": "x"})
                    break
                except Exception:  # the call that met the dead worker
                    await asyncio.sleep(0)
            times.append((time.perf_counter() - t0) * 1000)
    med = statistics.median(times)
    return [
        {
            "name": "restart: worker killed -> first call answered by its replacement",
            "value": med,
            "unit": "ms p50",
            "min": min(times),
            "max": max(times),
            "samples": samples,
            "note": f"includes the restart backoff of {backoff * 1000:.0f} ms "
            "(backoff_initial); the start itself is the rest",
        },
        {
            "name": "restart: the same without the backoff (start of the replacement)",
            "value": med - backoff * 1000,
            "unit": "ms p50",
            "samples": samples,
        },
    ]


async def _measure_swap(dirs: dict[str, Path], samples: int) -> list[dict[str, Any]]:
    from mcphost.host.sources import discover_directory

    versions = {k: discover_directory(dirs[k])[0] for k in ("1.0", "1.1")}
    host = _host(dirs["home"], dirs["1.0"])
    swap_ms: list[float] = []
    first_ms: list[float] = []
    async with host:
        await host.call("textkit.echo", {"text": "x"})
        current = "1.0"
        for _ in range(samples):
            current = "1.1" if current == "1.0" else "1.0"
            t0 = time.perf_counter()
            await host.activate(versions[current])
            t1 = time.perf_counter()
            await host.call("textkit.echo", {"text": "x"})
            t2 = time.perf_counter()
            assert host.plugins()[0].version.startswith(current)
            swap_ms.append((t1 - t0) * 1000)
            first_ms.append((t2 - t0) * 1000)
    return [
        {
            "name": "swap: Host.activate of another version (new worker started, old drained)",
            "value": statistics.median(swap_ms),
            "unit": "ms p50",
            "min": min(swap_ms),
            "max": max(swap_ms),
            "samples": samples,
        },
        {
            "name": "swap: activate -> first call answered by the new version",
            "value": statistics.median(first_ms),
            "unit": "ms p50",
            "min": min(first_ms),
            "max": max(first_ms),
            "samples": samples,
        },
    ]


def run(quick: bool = False) -> list[dict[str, Any]]:
    samples = 5 if quick else 20
    with tempfile.TemporaryDirectory(prefix="mcphost-bench-workers-") as tmp:
        dirs = _prepare(Path(tmp))
        rows = asyncio.run(_measure_memory(dirs))
        rows += asyncio.run(_measure_restart(dirs, samples))
        rows += asyncio.run(_measure_swap(dirs, samples))
    return rows


def to_markdown(rows: list[dict[str, Any]]) -> str:
    out = [
        "# Workers: memory, restart and swap",
        "",
        "textkit (and 8 renamed copies of it) served by `Host` with the strongest isolation "
        "that runs here. Memory from `psutil` `memory_full_info` of idle workers after one "
        "call; times are the median of the samples with the min-max.",
        "",
        "| figure | value | RSS MiB | min-max | note |",
        "|---|---:|---:|---:|---|",
    ]
    for r in rows:
        spread = f"{r['min']:.1f}-{r['max']:.1f}" if "min" in r else ""
        rss = f"{r['rss MiB']:.1f}" if "rss MiB" in r else ""
        out.append(
            f"| {r['name']} | {r['value']:.1f} {r['unit']} | {rss} | {spread} | "
            f"{r.get('note', '')} |"
        )
    out.append("")
    return "\n".join(out)


def main() -> None:
    text = to_markdown(run(quick="--quick" in sys.argv))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
