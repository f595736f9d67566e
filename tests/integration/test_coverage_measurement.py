"""The test command measures coverage, what runs in workers included, and holds floors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from bwrap_check import require_bwrap
from coverage import CoverageData
from support import coverage_table, subprocess_coverage

from mcphost.host import Host, HostConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("isolation", ["rlimits", "bwrap"])
def test_a_worker_saves_its_coverage_while_the_suite_measures_it(
    request: pytest.FixtureRequest,
    home_dir: Path,
    plugin_dirs: dict[str, Path],
    isolation: str,
    no_leftover_workers: None,
) -> None:
    if request.config.getoption("no_cov", False):
        pytest.skip("coverage is switched off for this run (--no-cov)")
    if isolation == "bwrap":
        require_bwrap()
    folder = subprocess_coverage.data_dir()
    assert folder is not None, "the test command measures coverage, subprocesses included"
    before = set(Path(folder).glob(".coverage.*"))

    async def call() -> str:
        config = HostConfig(allow_unsigned=True, isolation=isolation)
        async with Host(
            home_dir, config=config, plugin_dirs=[plugin_dirs["textkit"]], environment=False
        ) as host:
            return str(await host.call("textkit.upper", {"text": "measured"}))

    assert asyncio.run(call()) == "MEASURED"
    measured: set[str] = set()
    for path in set(Path(folder).glob(".coverage.*")) - before:
        data = CoverageData(str(path))
        data.read()
        measured.update(data.measured_files())
    # Only a worker runs the worker's module as a program.
    assert str(REPO / "sandbox" / "worker.py") in measured, sorted(measured)


def test_a_package_below_its_floor_fails_and_one_not_built_yet_is_only_named() -> None:
    below = coverage_table.Row("mcphost.host.flow", 200, 21, floor=90)
    at = coverage_table.Row("mcphost.host.batch", 200, 20, floor=90)
    unbuilt = coverage_table.Row("mcphost.host.compose", None, floor=90)
    assert (below.below_floor, at.below_floor, unbuilt.below_floor) == (True, False, False)
    lines = coverage_table.table([below, at, unbuilt])
    assert lines[1].split() == ["mcphost.host.flow", "200", "21", "89.5%", "90%", "BELOW", "FLOOR"]
    assert lines[2].split() == ["mcphost.host.batch", "200", "20", "90.0%", "90%"]
    assert lines[3].split() == ["mcphost.host.compose", "not", "built", "yet", "90%"]
    assert lines[-1].split() == ["TOTAL", "400", "41", "89.8%"]
