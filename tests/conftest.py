"""Fixtures shared by every suite: real wheels of the example plugins, installed for real.

Append new shared fixtures at the end; keep suite-specific ones in that suite's conftest.
"""

from __future__ import annotations

import asyncio
import inspect
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from coverage.exceptions import CoverageWarning
from support import coverage_table, subprocess_coverage
from support.wheels import build_wheel, install_target

from mcphost.sandbox.loops import loop_factory, loop_name, new_event_loop

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "example_plugins"
EXAMPLE_NAMES = ("textkit", "mathkit", "notes")


@pytest.fixture(scope="session")
def example_wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> wheel file, built once per test session from example_plugins/."""
    out = tmp_path_factory.mktemp("wheels")
    return {name: build_wheel(EXAMPLES / name, out) for name in EXAMPLE_NAMES}


@pytest.fixture(scope="session")
def plugin_dirs(
    example_wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """name -> a directory the example plugin was pip-installed into (--target)."""
    root = tmp_path_factory.mktemp("plugins")
    return {name: install_target(wheel, root / name) for name, wheel in example_wheels.items()}


@pytest.fixture
def home_dir(tmp_path: Path) -> Path:
    """A fresh, empty mcphost home directory (suites whose tests want a
    :class:`mcphost.host.Home` name that fixture ``home``)."""
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def no_leftover_workers() -> Iterator[None]:
    """Fail the test if it leaves any child process of this test process running."""
    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    gone_deadline = 5.0
    leftovers = [p for p in me.children(recursive=True) if p.pid not in before]
    _, alive = psutil.wait_procs(leftovers, timeout=gone_deadline)
    assert not alive, f"processes outlived the host: {[p.pid for p in alive]}"


def have(cmd: str) -> bool:
    return shutil.which(cmd) is not None


# -- coverage: subprocesses measured, one line per package, floors held ---------------

#: The packages' figures, and whether the whole suite ran (floors are held only then).
COVERAGE_ROWS = pytest.StashKey[tuple[list[coverage_table.Row], bool]]()


class _ChosenLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """``asyncio.run`` in the tests runs the loop mcphost runs (``MCPHOST_LOOP``)."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        factory = loop_factory()
        # asyncio's own factory asks this policy again.
        return super().new_event_loop() if factory is asyncio.new_event_loop else factory()


def pytest_configure(config: pytest.Config) -> None:
    # Workers and the processes the tests start are measured like this one.
    subprocess_coverage.install()
    subprocess_coverage.export()
    # The suite runs on uvloop by default and on the stdlib loop with MCPHOST_LOOP=asyncio;
    # the processes it starts inherit the variable.
    asyncio.set_event_loop_policy(_ChosenLoopPolicy())


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def test_...`` as ``asyncio.run`` would: on a fresh loop of the kind
    mcphost runs, its leftover tasks cancelled and the loop closed before the test's
    fixtures are torn down."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(pyfuncitem.obj(**args))
    return True


def pytest_report_header(config: pytest.Config) -> str:
    return f"event loop: {loop_name()}"


def _measuring(config: pytest.Config) -> bool:
    return bool(config.getoption("cov_source", None)) and not config.getoption("no_cov", False)


def _whole_suite(session: pytest.Session) -> bool:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    deselected = reporter.stats.get("deselected") if reporter is not None else None
    return session.config.args_source == pytest.Config.ArgsSource.TESTPATHS and not deselected


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> object:
    # A worker killed while it saved its data (a crash test, a memory limit) leaves a
    # partial file, which coverage skips when it combines, with a warning about it.
    warnings.filterwarnings("ignore", r"Data file .* isn't a coverage data file", CoverageWarning)
    # Registered after pytest-cov, this wraps it: its data is combined by now.
    result = yield
    if _measuring(session.config):
        rows, whole = coverage_table.rows(), _whole_suite(session)
        session.config.stash[COVERAGE_ROWS] = (rows, whole)
        if whole and any(r.below_floor for r in rows):
            session.testsfailed += 1
    return result


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    found = terminalreporter.config.stash.get(COVERAGE_ROWS, None)
    if found is None:
        return
    rows, whole = found
    terminalreporter.write_sep("-", "coverage by package: lines, subprocesses and workers included")
    for line in coverage_table.table(rows):
        terminalreporter.write_line(line)
    terminalreporter.write_line("each file: `coverage report -m`")
    if not whole:
        terminalreporter.write_line("floors are held when the whole suite runs")
        return
    for r in rows:
        if r.below_floor:
            terminalreporter.write_line(
                f"FAIL: {r.package} is {r.percent:.1f}% covered, below its floor of "
                f"{r.floor:.0f}% ([tool.mcphost.coverage-floors])",
                red=True,
                bold=True,
            )
