"""Run mcphost's benchmarks and write their tables to benchmarks/results/.

    python benchmarks/run.py [--quick] [--only core,mcp,...] [--out DIR]

Every ``benchmarks/bench_<name>.py`` that defines ``run(quick: bool) -> list[dict]`` is a
benchmark module. They run one after another in this process (and the processes they
start), and each gets one markdown table, ``<name>.md``; ``summary.md`` adds the
machine, the date, and every figure with its target and whether it was met. The rows a
module returns are described in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results"
#: Keys every row may carry; any other key becomes a column of the module's table.
KNOWN = ("name", "value", "unit", "target", "passed", "note")

Row = dict[str, Any]


@dataclass
class Bench:
    """One benchmark module: its ``run``, its own table writer if it has one, or why
    it could not be imported."""

    name: str
    run: Callable[[bool], list[Row]] | None = None
    to_markdown: Callable[[list[Row]], str] | None = None
    error: str = ""


def discover() -> dict[str, Bench]:
    """Every benchmarks/bench_<name>.py that defines ``run``, by name."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    found: dict[str, Bench] = {}
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        try:
            module = importlib.import_module(path.stem)
        except Exception:
            found[name] = Bench(name, error=traceback.format_exc())
            continue
        fn = getattr(module, "run", None)
        if callable(fn):
            writer = getattr(module, "to_markdown", None)
            found[name] = Bench(name, fn, writer if callable(writer) else None)
    return found


# -- formatting ----------------------------------------------------------------------
def fmt(value: Any) -> str:
    """A cell: floats to a readable precision, booleans as yes/no, the rest as text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        a = abs(value)
        if a >= 1000:
            return f"{value:,.0f}"
        if a >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def verdict(row: Row) -> str:
    if "passed" not in row or row["passed"] is None:
        return ""
    return "**pass**" if row["passed"] else "**FAIL**"


def label(row: Row) -> str:
    """A row's name; for a row without one, its text fields joined."""
    if "name" in row:
        return fmt(row["name"])
    words = [str(v) for k, v in row.items() if isinstance(v, str) and k != "note"]
    return fmt(" / ".join(words)) or "?"


def figure(row: Row) -> str:
    """A row's headline figure; for a row without one, its numeric fields."""
    if "value" not in row:
        return fmt(
            ", ".join(
                f"{k} {fmt(v)}"
                for k, v in row.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            )
        )
    value = row["value"]
    unit = row.get("unit", "")
    return f"{fmt(value)} {unit}".strip()


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def module_table(rows: list[Row]) -> str:
    """One table for a module: name, figure, its extra columns, target, result, note."""
    extras: list[str] = []
    for row in rows:
        for key in row:
            if key not in KNOWN and key not in extras:
                extras.append(key)
    has_target = any("target" in r for r in rows)
    has_note = any(r.get("note") for r in rows)
    header = ["benchmark", "figure", *extras]
    if has_target:
        header += ["target", "result"]
    if has_note:
        header.append("note")
    body = []
    for row in rows:
        cells = [label(row), figure(row), *(fmt(row.get(k)) for k in extras)]
        if has_target:
            cells += [fmt(row.get("target")), verdict(row)]
        if has_note:
            cells.append(fmt(row.get("note")))
        body.append(cells)
    return markdown_table(header, body)


# -- the machine -------------------------------------------------------------------
def machine() -> dict[str, str]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    try:
        commit = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return {
        "load average": load_average(),
        "event loop": event_loop(),
        "cores": f"{os.cpu_count()} ({usable} usable by this process)",
        "cpu": cpu or platform.processor() or "unknown",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "commit": commit or "unknown",
    }


def event_loop() -> str:
    """The loop the benchmarks' host runs on first (MCPHOST_LOOP, else uvloop if any)."""
    try:
        from mcphost.sandbox.loops import loop_name

        name = loop_name()
    except Exception as exc:  # not installed, or a bad MCPHOST_LOOP
        return f"unknown ({exc})"
    try:
        from importlib.metadata import version

        return f"{name} {version('uvloop')}" if name == "uvloop" else name
    except Exception:
        return name


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: how busy the machine was with other work."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min)"


# -- writing -----------------------------------------------------------------------
def write_module(out: Path, bench: Bench, rows: list[Row], seconds: float, quick: bool) -> str:
    """Write ``<name>.md`` (the module's own table when it has a writer) and
    ``<name>.json``; return the markdown."""
    meta = f"Measured {now_utc()} in {seconds:.1f} s{' (quick run)' if quick else ''}; "
    meta += "see summary.md for the machine.\n"
    if bench.to_markdown is not None:
        text = bench.to_markdown(rows).rstrip() + "\n\n" + meta
    else:
        text = f"# Benchmark: {bench.name}\n\n{meta}\n{module_table(rows)}"
    (out / f"{bench.name}.md").write_text(text)
    (out / f"{bench.name}.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
    return text


def write_summary(
    out: Path,
    results: dict[str, list[Row]],
    errors: dict[str, str],
    seconds: dict[str, float],
    quick: bool,
    load_before: str,
) -> None:
    info = machine()
    lines = [f"# Benchmark summary{' (quick run)' if quick else ''}", ""]
    lines += [f"- date: {now_utc()}", f"- load average before: {load_before}"]
    lines += [f"- {k}{' after' if k == 'load average' else ''}: {v}" for k, v in info.items()]
    lines += [f"- modules: {', '.join(f'{m} ({seconds[m]:.1f} s)' for m in seconds)}", ""]
    targeted = [r for rows in results.values() for r in rows if "passed" in r]
    met = sum(1 for r in targeted if r["passed"])
    lines += [f"Targets met: {met} of {len(targeted)}.", ""]
    body = []
    for mod, rows in results.items():
        for row in rows:
            body.append(
                [
                    mod,
                    label(row),
                    figure(row),
                    fmt(row.get("target")) or "-",
                    verdict(row) or "-",
                ]
            )
    lines.append(markdown_table(["module", "benchmark", "figure", "target", "result"], body))
    for mod, err in errors.items():
        lines += [f"## {mod}: failed", "", "```", err.rstrip(), "```", ""]
    (out / "summary.md").write_text("\n".join(lines))


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run mcphost's benchmarks side by side.")
    parser.add_argument("--quick", action="store_true", help="fewer samples (about 30 s)")
    parser.add_argument("--only", default="", help="comma-separated modules, e.g. core,mcp")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where tables go")
    args = parser.parse_args(argv)

    modules = discover()
    wanted = [m.strip() for m in args.only.split(",") if m.strip()] or list(modules)
    unknown = [m for m in wanted if m not in modules]
    if unknown:
        parser.error(
            f"no benchmark module named {', '.join(unknown)}; "
            f"available: {', '.join(modules) or 'none'}"
        )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    load_before = load_average()
    results: dict[str, list[Row]] = {}
    errors: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name in wanted:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        bench = modules[name]
        if bench.run is None:
            seconds[name] = 0.0
            errors[name] = bench.error
            print(bench.error, file=sys.stderr)
            continue
        try:
            rows = list(bench.run(args.quick))
        except Exception:
            seconds[name] = time.perf_counter() - t0
            errors[name] = traceback.format_exc()
            print(errors[name], file=sys.stderr)
            continue
        seconds[name] = time.perf_counter() - t0
        results[name] = rows
        print(write_module(out, bench, rows, seconds[name], args.quick), flush=True)
    write_summary(out, results, errors, seconds, args.quick, load_before)
    print(f"wrote {out / 'summary.md'}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
