"""The benchmark runner runs for real and writes its tables; no figure is judged here."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "benchmarks" / "run.py"


def run_benchmarks(*args: str, timeout: float = 110) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUNNER), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


@pytest.mark.slow
def test_quick_core_benchmark_writes_a_table_with_every_row(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = run_benchmarks("--quick", "--only", "core", "--out", str(out))
    assert proc.returncode == 0, proc.stderr

    rows = json.loads((out / "core.json").read_text())
    table = (out / "core.md").read_text()
    summary = (out / "summary.md").read_text()
    names = [row["name"] for row in rows]
    for name in names:
        assert name.replace("|", "\\|") in table
        assert name.replace("|", "\\|") in summary

    def measured(fragment: str) -> list[str]:
        return [n for n in names if fragment in n]

    assert measured("raw floor: blocking client and server")
    assert measured("host.call textkit.echo (no-op)")
    for size in (0, 100, 1000, 10000):
        assert measured(f"host.call mathkit.spin({size} µs)")
    assert measured("pipelined, 64 in flight: host.call")
    for loop in ("uvloop", "asyncio"):  # the host on each loop, no-op and pipelined
        assert measured(f"host.call textkit.echo (no-op) -> real worker, host on {loop}")
        assert measured(
            f"64 in flight: host.call textkit.echo (no-op) -> real worker, host on {loop}"
        )
    for size in ("100 B", "10 KB", "1 MB", "10 MB"):
        assert measured(f"payload of {size} each way")
    assert measured("from an async generator") and measured("from a sync generator")
    for place in ("[cross core]", "[same core]"):
        assert measured(place)
    assert measured("worker cold start to completed handshake, rlimits backend")
    assert measured("verify_tree before a start")
    targeted = [row for row in rows if "target" in row]
    assert {row["target"] for row in targeted} >= {
        "<= 1.5x",
        "<= 2x",
        "<= 1.4x",
        "< 5 %",
        ">= 0.7x",
        "< 100 ms",
        ">= 300,000 items/s",
        ">= 150,000 items/s",
    }
    # A figure is the median of its rounds, with their range beside it.
    noop = next(r for r in rows if "host.call textkit.echo (no-op)" in r["name"])
    assert re.fullmatch(r"[\d.,]+ µs \([\d.,]+-[\d.,]+\)", noop["p50"]), noop["p50"]
    assert all(isinstance(row["passed"], bool) for row in targeted)
    for key in ("cores:", "python:", "kernel:", "date:"):
        assert key in summary
    assert "| core |" in summary


def test_an_unknown_benchmark_module_is_a_usage_error_naming_the_known_ones(
    tmp_path: Path,
) -> None:
    proc = run_benchmarks("--only", "nosuch", "--out", str(tmp_path), timeout=60)
    assert proc.returncode == 2
    assert "no benchmark module named nosuch" in proc.stderr
    assert "core" in proc.stderr
    assert not (tmp_path / "summary.md").exists()
