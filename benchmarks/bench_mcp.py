"""MCP front end, side by side: the official SDK's server vs ``mcphost serve``.

Every server is driven by the same official ``mcp`` client (``mcp.client.Client``) over
stdio, calling the same echo tool: (a) the SDK's own ``MCPServer`` with the tool
in-process, no isolation; (b) ``mcphost serve`` with the tool in the example plugin
``textkit`` in its sandboxed worker (the strongest isolation that runs here); (c) the
same with an rlimits-only worker.

Measured, in rounds where the servers take turns so each sees the same machine:

- spawn to first result: from starting the server's process to the result of the
  client's first ``tools/call`` (connect, handshake or discover, the call); the figure
  that includes everything a fresh client waits for, the worker's start included;
- spawn to initialized: the client's connect alone, for reference;
- the same ``mcphost serve`` with ``--metrics 127.0.0.1:0`` (its Prometheus listener
  and status page), and the difference of its spawn to first result, within each round;
- sequential: one call at a time (calls/s, p50, p99);
- 16 concurrent: 16 tasks calling at once over one connection (calls/s, p50, p99).

Each figure is the median over the rounds, with the min-max; ratios to the official
server are taken within each round, then their median.

    python benchmarks/bench_mcp.py [--quick]

writes ``benchmarks/results/mcp.md``; ``run(quick)`` returns the rows for a runner.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "mcp.md"
CONCURRENCY = 16

OFFICIAL_SERVER = '''
from mcp.server.mcpserver import MCPServer

app = MCPServer("official-echo")


@app.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


app.run()
'''

OFFICIAL = "official MCPServer (in-process tool)"
SANDBOXED = "mcphost serve (sandboxed plugin)"
RLIMITS = "mcphost serve (rlimits-only worker)"
METRICS = "mcphost serve --metrics (sandboxed plugin)"


def mcphost_command() -> list[str]:
    script = Path(sys.executable).with_name("mcphost")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from mcphost.host.cli import main; main()"]


def install_textkit(work: Path) -> Path:
    """Build the example plugin textkit and install it into a directory; return it."""
    wheels, target = work / "wheels", work / "plugins" / "textkit"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    project = REPO / "example_plugins" / "textkit"
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(project)],
        check=True,
    )
    wheel = next(wheels.glob("mcphost_textkit-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    return target


def compile_mcphost() -> None:
    """Write the bytecode of every mcphost module, as ``pip install`` does at install.

    A development checkout (an editable install) has bytecode only for the modules some
    process has imported while allowed to write it; the modules only workers import
    (workers run with ``-B``) have none where ``PYTHONDONTWRITEBYTECODE`` is set, so
    each worker would compile them from source at every start, which no installed
    mcphost does (the official server's modules, installed by pip, have theirs).
    """
    import compileall
    import importlib

    roots: set[str] = set()
    for sub in ("host", "sdk", "sandbox", "registry", "security"):
        roots.update(importlib.import_module(f"mcphost.{sub}").__path__)
    for root in sorted(roots):
        compileall.compile_dir(root, quiet=1)


def _prepare(work: Path) -> dict[str, tuple[list[str], str]]:
    """Install textkit, compile mcphost as an install would; return each server's argv
    and the name of its echo tool."""
    target = install_textkit(work)
    compile_mcphost()
    official = work / "official_echo.py"
    official.write_text(OFFICIAL_SERVER)
    servers = {OFFICIAL: ([sys.executable, str(official)], "echo")}
    serve = ["serve", "--no-environment", "--plugin-dir", str(target)]
    for name, extra in ((SANDBOXED, ""), (RLIMITS, 'isolation = "rlimits"\n')):
        home = work / ("home-rlimits" if extra else "home")
        home.mkdir()
        (home / "config.toml").write_text("allow_unsigned = true\n" + extra)
        servers[name] = ([*mcphost_command(), "--home", str(home), *serve], "textkit.echo")
    # The same server with its metrics listener (and status page): what it adds to a start.
    servers[METRICS] = ([*servers[SANDBOXED][0], "--metrics", "127.0.0.1:0"], "textkit.echo")
    return servers


def _pcts(lat: list[float]) -> tuple[float, float]:
    lat = sorted(lat)
    return lat[len(lat) // 2] * 1000, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000


async def _measure(argv: list[str], tool: str, calls: int, starts: int) -> dict[str, float]:
    """One round against one server: ``starts`` fresh starts, then one connection's
    sequential and concurrent calls."""
    from mcp.client.client import Client
    from mcp.client.stdio import StdioServerParameters

    params = StdioServerParameters(command=argv[0], args=argv[1:])
    args = {"text": "hello"}
    first_ms: list[float] = []
    init_ms: list[float] = []
    for _ in range(starts):
        t0 = time.perf_counter()
        async with Client(params) as client:
            init_ms.append((time.perf_counter() - t0) * 1000)
            res = await client.call_tool(tool, args)
            first_ms.append((time.perf_counter() - t0) * 1000)
            assert not res.is_error and res.structured_content == {"result": "hello"}
    out: dict[str, float] = {
        "first_ms": statistics.median(first_ms),
        "initialized_ms": statistics.median(init_ms),
    }
    async with Client(params) as client:
        for _ in range(min(200, calls)):
            await client.call_tool(tool, args)
        lat: list[float] = []
        t_all = time.perf_counter()
        for _ in range(calls):
            t = time.perf_counter()
            res = await client.call_tool(tool, args)
            lat.append(time.perf_counter() - t)
        out["seq_calls_per_s"] = calls / (time.perf_counter() - t_all)
        out["seq_p50_ms"], out["seq_p99_ms"] = _pcts(lat)
        assert not res.is_error and res.structured_content == {"result": "hello"}

        clat: list[float] = []

        async def caller(n: int) -> None:
            for _ in range(n):
                t = time.perf_counter()
                r = await client.call_tool(tool, args)
                clat.append(time.perf_counter() - t)
                assert not r.is_error

        each = max(1, calls // CONCURRENCY)
        t_all = time.perf_counter()
        await asyncio.gather(*(caller(each) for _ in range(CONCURRENCY)))
        out["conc_calls_per_s"] = each * CONCURRENCY / (time.perf_counter() - t_all)
        out["conc_p50_ms"], out["conc_p99_ms"] = _pcts(clat)
    return out


def _spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Rows of the side-by-side benchmark: per server its figures (median of the
    rounds, min-max), then mcphost's targets as ratios to the official server."""
    calls, starts, rounds = (300, 3, 3) if quick else (1600, 5, 5)
    per: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="mcphost-bench-mcp-") as tmp:
        servers = _prepare(Path(tmp))
        if quick:
            del servers[RLIMITS]
        for _ in range(rounds):
            for name, (argv, tool) in servers.items():
                per.setdefault(name, []).append(asyncio.run(_measure(argv, tool, calls, starts)))
    return _rows(per, rounds, calls, starts)


def _rows(
    per: dict[str, list[dict[str, float]]], rounds: int, calls: int, starts: int
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    common = {"rounds": rounds, "calls": calls, "starts per round": starts}
    figures: list[tuple[str, str, str]] = [
        ("first_ms", "spawn to first tools/call result", "ms"),
        ("initialized_ms", "spawn to initialized (connect alone)", "ms"),
        ("seq_calls_per_s", "sequential calls", "calls/s"),
        ("conc_calls_per_s", f"{CONCURRENCY} concurrent calls", "calls/s"),
    ]
    for name, results in per.items():
        for key, what, unit in figures:
            med, lo, hi = _spread([r[key] for r in results])
            row: dict[str, Any] = {"name": f"{what}: {name}", "value": med, "unit": unit}
            row.update({"min": lo, "max": hi})
            prefix = key.split("_")[0]
            if prefix in ("seq", "conc"):
                row["p50 ms"] = statistics.median(r[f"{prefix}_p50_ms"] for r in results)
                row["p99 ms"] = statistics.median(r[f"{prefix}_p99_ms"] for r in results)
            if name == SANDBOXED and key == "first_ms":
                row["target"], row["passed"] = "<= 150 ms", med <= 150
            rows.append({**row, **common})
    official = per.get(OFFICIAL)
    if official:
        for name in (SANDBOXED, RLIMITS):
            if name in per:
                rows.extend(_ratios(name, per[name], official, common))
    if METRICS in per and SANDBOXED in per:
        extra = [
            m["first_ms"] - p["first_ms"] for m, p in zip(per[METRICS], per[SANDBOXED], strict=True)
        ]
        med, lo, hi = _spread(extra)
        rows.append(
            {
                "name": "spawn to first result: --metrics minus without",
                "value": med,
                "unit": "ms",
                "min": lo,
                "max": hi,
                **common,
            }
        )
    return rows


def _ratios(
    name: str,
    ours: list[dict[str, float]],
    official: list[dict[str, float]],
    common: dict[str, Any],
) -> list[dict[str, Any]]:
    rows = []
    checks: list[tuple[str, str, str | None, Callable[[float], bool] | None]] = [
        ("seq_calls_per_s", "sequential calls/s", ">= 3x", lambda v: v >= 3),
        ("conc_calls_per_s", f"{CONCURRENCY}-concurrent calls/s", ">= 4x", lambda v: v >= 4),
        ("first_ms", "spawn to first result (official's / ours)", None, None),
    ]
    for key, what, target, ok in checks:
        ratios = [
            (o[key] / m[key]) if key == "first_ms" else (m[key] / o[key])
            for m, o in zip(ours, official, strict=True)
        ]
        med, lo, hi = _spread(ratios)
        row: dict[str, Any] = {
            "name": f"{name} vs official: {what}",
            "value": med,
            "unit": "x official",
            "min": lo,
            "max": hi,
        }
        if target is not None and ok is not None and name == SANDBOXED:
            row["target"], row["passed"] = target, ok(med)
        rows.append({**row, **common})
    return rows


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _num(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"


def to_markdown(rows: list[dict[str, Any]]) -> str:
    r0 = rows[0]
    out = [
        "# MCP front end: official SDK server vs mcphost serve",
        "",
        "Same official `mcp` client (`Client`, default connect mode), stdio, the same echo "
        f"tool. {r0['rounds']} rounds in which the servers take turns; per round "
        f"{r0['starts per round']} fresh starts (median), then {r0['calls']} sequential "
        f"calls and {r0['calls']} calls from {CONCURRENCY} concurrent tasks on one "
        "connection. Every figure is the median over the rounds (min-max beside it); ratios "
        "are taken within a round, then their median.",
        "",
        f"Machine: {os.cpu_count()} CPUs, load average {_load()} when the run ended "
        "(the numbers move with other work on the machine).",
        "",
        "| figure | median | min-max | p50 ms | p99 ms | target | met |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        p50 = f"{r['p50 ms']:.3f}" if "p50 ms" in r else ""
        p99 = f"{r['p99 ms']:.3f}" if "p99 ms" in r else ""
        met = "" if "passed" not in r else ("**pass**" if r["passed"] else "**FAIL**")
        out.append(
            f"| {r['name']} | {_num(r['value'])} {r['unit']} | "
            f"{_num(r['min'])}-{_num(r['max'])} | {p50} | {p99} | {r.get('target', '')} | "
            f"{met} |"
        )
    out.append("")
    return "\n".join(out)


def main() -> None:
    rows = run(quick="--quick" in sys.argv)
    text = to_markdown(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    # Keep the sections other benchmarks write into this file (bench_mcp_content.py).
    old = RESULTS.read_text() if RESULTS.exists() else ""
    marker = old.find("<!-- bench_mcp_content -->")
    RESULTS.write_text(text + ("\n" + old[marker:] if marker >= 0 else ""))
    print(text)


if __name__ == "__main__":
    main()
