"""Compositions: what the engine adds over calling the tools yourself.

The example plugins (textkit, mathkit) are installed with pip into a scratch directory
and served by one embedded ``Host(..., isolation="rlimits")``. Side by side, in rounds
that interleave the two paths:

- a 5-step pipeline of ``mathkit.spin(1 ms)`` through the engine against the same 5
  ``Host.call``s one after another: the engine's overhead in % (target < 3 %);
- the same with ``mathkit.spin(0)`` (no-op steps): the engine's added µs per step;
- a fan-out of 32 independent ``textkit.sleep(50 ms)`` steps against 32 sequential
  direct calls: the speed-up (target >= 15x);
- ``check`` of a 50-step composition against the host's tools: ms (target < 20 ms).

    python benchmarks/bench_compose.py [--quick]

writes ``benchmarks/results/compose.md``; ``run(quick)`` returns the rows for a runner.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "compose.md"


def _install(work: Path) -> list[Path]:
    dirs = []
    for name in ("textkit", "mathkit"):
        target = work / name
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "-q",
                "install",
                "--no-deps",
                "--no-build-isolation",
                "--target",
                str(target),
                str(REPO / "example_plugins" / name),
            ],
            check=True,
            capture_output=True,
        )
        dirs.append(target)
    return dirs


def _pipeline(microseconds: int) -> Any:
    from mcphost.host.compose import composition_from_data

    steps = [{"id": "s1", "tool": "mathkit.spin", "args": {"microseconds": microseconds}}]
    for i in range(2, 6):
        steps.append(
            {
                "id": f"s{i}",
                "tool": "mathkit.spin",
                "args": {"microseconds": f"$steps.s{i - 1}.output"},
            }
        )
    return composition_from_data({"name": "bench.pipeline", "steps": steps})


def _fan_out(n: int, seconds: float) -> Any:
    from mcphost.host.compose import composition_from_data

    steps = [
        {"id": f"s{i}", "tool": "textkit.sleep", "args": {"seconds": seconds}} for i in range(n)
    ]
    return composition_from_data(
        {
            "name": "bench.fanout",
            "steps": steps,
            "output": [f"$steps.s{i}.output" for i in range(n)],
        }
    )


def _wide(n: int) -> Any:
    """A 50-step composition: a chain with branches, conditions and references."""
    from mcphost.host.compose import composition_from_data

    steps: list[dict[str, Any]] = [
        {"id": "s0", "tool": "textkit.count", "args": {"text": "$input.text"}}
    ]
    for i in range(1, n):
        if i % 3 == 0:
            steps.append(
                {
                    "id": f"s{i}",
                    "tool": "mathkit.is_prime",
                    "args": {"n": f"$steps.s{i - 1}.output.words"},
                    "when": f"steps.s{i - 1}.output.words > `1`",
                    "default": False,
                }
            )
        else:
            steps.append(
                {
                    "id": f"s{i}",
                    "tool": "textkit.count",
                    "args": {"text": "$input.text"},
                    "depends_on": [f"s{i - 1}"],
                }
            )
    return composition_from_data(
        {
            "name": "bench.wide",
            "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
            "steps": steps,
        }
    )


async def _measure(quick: bool) -> dict[str, Any]:
    from mcphost.host import Host, HostConfig
    from mcphost.host.compose import Plan, check, make_run

    rounds = 5 if quick else 15
    per_round = 20 if quick else 60
    with tempfile.TemporaryDirectory(prefix="mcphost-bench-compose-") as tmp:
        work = Path(tmp)
        dirs = _install(work)
        (work / "home").mkdir()
        config = HostConfig(allow_unsigned=True, isolation="rlimits")
        async with Host(
            work / "home",
            config=config,
            plugin_dirs=dirs,
            environment=False,
            registry=False,
            metrics=False,
        ) as host:
            out: dict[str, Any] = {}
            for label, us in (("spin", 1000), ("noop", 0)):
                plan = Plan(_pipeline(us))
                engine: list[float] = []
                direct: list[float] = []
                # Paired: each engine run is next to its 5 direct calls, so load that
                # comes and goes on a shared machine falls on both alike.
                for _ in range(rounds * per_round):
                    t = time.perf_counter()
                    await make_run(plan, host, {}).run()
                    engine.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    v = us
                    for _ in range(5):
                        v = await host.call("mathkit.spin", {"microseconds": v})
                    direct.append(time.perf_counter() - t)
                out[label] = (engine, direct)
            fan = Plan(_fan_out(32, 0.05))
            fan_engine: list[float] = []
            fan_direct: list[float] = []
            for _ in range(2 if quick else 3):
                t = time.perf_counter()
                await make_run(fan, host, {}).run()
                fan_engine.append(time.perf_counter() - t)
                t = time.perf_counter()
                for _ in range(32):
                    await host.call("textkit.sleep", {"seconds": 0.05})
                fan_direct.append(time.perf_counter() - t)
            out["fan"] = (fan_engine, fan_direct)
            wide = _wide(50)
            catalog = host.plugin_catalog()
            assert check(wide, catalog) == [], check(wide, catalog)
            check(wide, catalog)  # the expression library is loaded once, as at a host's start
            times = []
            for _ in range(10 if quick else 30):
                t = time.perf_counter()
                check(wide, catalog)
                times.append(time.perf_counter() - t)
            out["validate"] = times
            return out


def run(quick: bool = False) -> list[dict[str, Any]]:
    from mcphost.sandbox.loops import loop_factory

    # On the loop mcphost runs (uvloop unless MCPHOST_LOOP says otherwise).
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        m = runner.run(_measure(quick))
    rows = []
    # The median of the pairs' differences, over the median direct time.
    diffs = [e - d for e, d in zip(*m["spin"], strict=True)]
    overhead = statistics.median(diffs) / statistics.median(m["spin"][1]) * 100
    rows.append(
        {
            "name": "5-step pipeline of mathkit.spin(1 ms): engine vs 5 sequential Host.call",
            "value": round(overhead, 2),
            "unit": "% overhead",
            "target": "< 3 %",
            "passed": overhead < 3,
            "note": f"median of {len(diffs)} pairs; medians per run "
            f"{statistics.median(m['spin'][0]) * 1e3:.2f} ms vs "
            f"{statistics.median(m['spin'][1]) * 1e3:.2f} ms",
        }
    )
    per_step = [(e - d) / 5 * 1e6 for e, d in zip(*m["noop"], strict=True)]
    rows.append(
        {
            "name": "the same with no-op steps (spin 0): engine's added time per step",
            "value": round(statistics.median(per_step), 1),
            "unit": "µs per step",
            "note": f"median per run {statistics.median(m['noop'][0]) * 1e6:.0f} µs vs "
            f"{statistics.median(m['noop'][1]) * 1e6:.0f} µs (median of {len(per_step)} pairs)",
        }
    )
    speedups = [d / e for e, d in zip(*m["fan"], strict=True)]
    speed = statistics.median(speedups)
    rows.append(
        {
            "name": "fan-out of 32 textkit.sleep(50 ms) vs 32 sequential calls",
            "value": round(speed, 1),
            "unit": "x faster",
            "target": ">= 15x",
            "passed": speed >= 15,
            "note": f"{statistics.median(m['fan'][0]) * 1e3:.0f} ms vs "
            f"{statistics.median(m['fan'][1]) * 1e3:.0f} ms",
        }
    )
    v = statistics.median(m["validate"]) * 1e3
    rows.append(
        {
            "name": "check of a 50-step composition",
            "value": round(v, 2),
            "unit": "ms",
            "target": "< 20 ms",
            "passed": v < 20,
            "note": f"p max {max(m['validate']) * 1e3:.2f} ms",
        }
    )
    return rows


def to_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Compositions: the engine against calling the tools yourself",
        "",
        f"Measured {time.strftime('%Y-%m-%d')}; one embedded Host (rlimits) serving textkit",
        "and mathkit from example_plugins; engine and direct calls interleaved in rounds, the",
        "median of the rounds' figures shown.",
        "",
        "| measure | figure | target | result | note |",
        "|---|---:|---|---|---|",
    ]
    for r in rows:
        result = "" if "passed" not in r else ("pass" if r["passed"] else "**FAIL**")
        lines.append(
            f"| {r['name']} | {r['value']} {r['unit']} | {r.get('target', '')} | {result} | "
            f"{r['note']} |"
        )
    return "\n".join([*lines, ""])


def main() -> None:
    rows = run(quick="--quick" in sys.argv)
    text = to_markdown(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
