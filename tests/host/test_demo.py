"""`mcphost demo`, run for real as a user runs it: what it prints, and what it leaves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from bwrap_check import require_bwrap
from support.cli import run_mcphost

from mcphost.host.examples import copy_example
from mcphost.sdk.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "example_plugins"


def run_demo(
    tmp_path: Path, path: str | None = None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``mcphost demo`` from the checkout's root, with its temp files under ``tmp_path``
    and an operator home that must stay untouched; returns the process and that home.
    Its stderr goes into the same stream as its stdout, in the order a terminal shows it."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    operator_home = tmp_path / "operator-home"
    env = {**os.environ, "TMPDIR": str(tmp), "MCPHOST_HOME": str(operator_home)}
    env.pop("MCPHOST_EXAMPLES", None)
    if path is not None:
        env["PATH"] = path
    proc = run_mcphost(
        "demo",
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=110,
        stdin=subprocess.DEVNULL,
    )
    return proc, operator_home


def check_swap_and_rollback(out: str) -> None:
    """The lines that show two versions installed, a swap under load with zero failed
    calls, and a rollback."""
    assert re.search(r"\$ mcphost plugin install mcphost_textkit-1\.0\.0-\S+\.whl --yes  \[", out)
    assert "textkit 1.0.0: active; 7 tools" in out
    assert re.search(
        r"\$ mcphost plugin install mcphost_textkit-1\.1\.0-\S+\.whl --yes --no-activate  \[", out
    )
    assert "textkit 1.1.0: installed beside, not active; 7 tools" in out
    assert "registry: textkit 1.0.0 (active), 1.1.0" in out

    assert re.search(
        r"\$ mcphost plugin swap textkit 1\.1\.0  -> textkit: 1\.0\.0 -> 1\.1\.0  \[[\d.]+ ms\]",
        out,
    )
    assert re.search(
        r"textkit 1\.1\.0 answered [\d.]+ ms after the command started \([\d.]+ ms after it "
        r"returned\): '(c\d+-\d+)' -> '\1 \[1\.1\]'$",
        out,
        re.M,
    )
    assert re.search(
        r"\$ mcphost plugin rollback textkit  -> textkit: 1\.1\.0 -> 1\.0\.0  \[[\d.]+ ms\]", out
    )
    assert re.search(
        r"textkit 1\.0\.0 answered [\d.]+ ms after the command started .*: "
        r"'(c\d+-\d+)' -> '\1'$",
        out,
        re.M,
    )
    m = re.search(
        r"([\d,]+) calls in [\d.]+ s: ([\d,]+) answered by 1\.0\.0, then ([\d,]+) answered "
        r"by 1\.1\.0, then ([\d,]+) answered by 1\.0\.0$",
        out,
        re.M,
    )
    assert m, out
    total, before, during, after = (int(g.replace(",", "")) for g in m.groups())
    assert total == before + during + after
    assert min(before, during, after) >= 300
    assert "failed calls: 0; answers from the old version after a switch: 0" in out
    assert re.search(
        r"hot swap under load: [\d,]+ calls by 8 callers, 0 failed; swap [\d.]+ ms, "
        r"rollback [\d.]+ ms",
        out,
    )


def check_the_rest(out: str) -> None:
    """What the demo showed before the registry came in: tools, calls, a stream, errors,
    a contained crash, latency and a summary."""
    assert "generated key ed25519:" in out
    assert "built 5 wheels with pip" in out
    assert "textkit.count_to" in out and "[stream]" in out
    assert "textkit.upper({'text': 'hello from a sandbox'}) -> 'HELLO FROM A SANDBOX'" in out
    assert "notes.read({'title': 'demo'}) -> \"kept in the plugin's data dir\"" in out
    assert "received [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]" in out
    assert re.search(r"2000 items, every one in order; the producer was paused [1-9]\d* times", out)
    # The high-priority stream took the running one's place (suspended, not ended).
    assert re.search(r"suspended +textkit\.count_to priority 5", out)
    assert (
        "finished in this order: high (priority 0, came second), running (priority 5), "
        "low (priority 9, came first)" in out
    )
    assert "textkit.nope: [tool_not_found]" in out
    assert "worker killed mid-call -> [worker_crashed]" in out
    check_reads_cleanly(out)
    assert "next call after the crash -> 'BACK AGAIN'" in out
    assert re.search(r"textkit\.echo: p50 [\d.]+ ms", out)
    assert re.search(r"textkit 1\.0\.0: running, pid \d+, \d+ calls, 1 restarts", out)
    assert re.search(r"all workers stopped; demo took [\d.]+ ms", out)
    check_the_composition(out)
    check_the_batching(out)


def check_the_batching(out: str) -> None:
    """The batching act: 64 callers with batching off and on, the same answers, batches
    formed, and a high-priority call answered before the queue it came behind."""
    assert "== batching: 64 concurrent callers of mathkit.factorize, one number per call" in out
    assert re.search(r"batching off: +[\d,]+ calls/s, p99 [\d.]+ ms; one worker call each", out)
    m = re.search(
        r"batching on: +[\d,]+ calls/s, p99 [\d.]+ ms; [\d,]+ batch calls of up to (\d+)", out
    )
    assert m and int(m[1]) > 1, out
    assert "every caller got the same answer either way" in out
    assert "before 12 of the 12 priority-2 calls queued ahead of it" in out
    assert "answer order: running, high, 12 low" in out
    assert re.search(
        r"batching: [\d.]+x the calls/s with 64 callers \(p99 [\d.]+ ms on, [\d.]+ ms off; "
        r"batches of up to \d+\); a priority-0 call overtook 12 queued calls",
        out,
    )


def check_the_composition(out: str) -> None:
    """The composition act: added, run with a trace, served, a breaking swap refused."""
    assert "added demo.report version 1; running hosts serve it within a second" in out
    assert re.search(r"^ +step +start ms +duration ms +attempts +outcome +timeline$", out, re.M)
    assert re.search(r"^ +primes .* ok .*\|  5 items, 0 failed$", out, re.M)
    assert (
        '-> {"words": 4, "title": "TOOLS THAT WORK TOGETHER", "primes": [true, false, true, '
        "false, true]}" in out
    )
    assert 'serves it as a tool too: {"words": 2, "title": "(a short title)"' in out
    assert "$ mcphost plugin swap textkit 2.0.0  -> exit status 1" in out
    assert (
        "composition demo.report: step 'loud', args.text: textkit.upper has no parameter "
        "'text' (it has: value)" in out
    )
    assert "the breaking swap refused" in out


#: A line in the format of the host's own log (``mcphost -v`` shows these on stderr).
LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) mcphost[.\w]*: ", re.M)


def check_reads_cleanly(out: str) -> None:
    """Every line is the demo's own: a section title or an indented line, and no line
    of the host's log breaks in between them."""
    assert not LOG_LINE.search(out), out
    strays = [line for line in out.splitlines() if line and not line.startswith(("== ", "   "))]
    assert not strays, strays


def check_nothing_left(
    proc: subprocess.CompletedProcess[str], tmp_path: Path, operator: Path
) -> None:
    m = re.search(r"throw-away home: (\S+)", proc.stdout)
    assert m, proc.stdout
    home = m.group(1)
    assert not Path(home).exists(), "the throw-away home was not removed"
    assert list((tmp_path / "tmp").iterdir()) == [], "the demo left temp files"
    assert not operator.exists(), "the demo touched the operator's home"
    leftovers = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if any(home in part for part in p.info["cmdline"] or []):
            leftovers.append(p.info["pid"])
    assert not leftovers, f"processes of the demo outlived it: {leftovers}"


@pytest.fixture(scope="module")
def bwrap_demo(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """One run of ``mcphost demo`` with bubblewrap, read by the tests below."""
    require_bwrap()
    tmp_path = tmp_path_factory.mktemp("demo")
    proc, operator = run_demo(tmp_path)
    return proc, tmp_path, operator


@pytest.mark.slow
@pytest.mark.bwrap
def test_demo_installs_two_versions_swaps_under_load_and_rolls_back(
    bwrap_demo: tuple[subprocess.CompletedProcess[str], Path, Path],
) -> None:
    proc, tmp_path, operator = bwrap_demo
    assert proc.returncode == 0, proc.stdout
    out = proc.stdout
    assert "isolation: bwrap (namespaces, rlimits)" in out
    assert "WARNING" not in out
    check_swap_and_rollback(out)
    check_the_rest(out)
    check_nothing_left(proc, tmp_path, operator)


@pytest.mark.slow
@pytest.mark.bwrap
def test_demo_output_reads_from_top_to_bottom_with_no_line_of_the_host_log_in_it(
    bwrap_demo: tuple[subprocess.CompletedProcess[str], Path, Path],
) -> None:
    proc, _, _ = bwrap_demo
    assert proc.returncode == 0, proc.stdout
    check_reads_cleanly(proc.stdout)


@pytest.mark.slow
@pytest.mark.bwrap
def test_demo_says_it_killed_the_worker_itself_rather_than_guessing_why_it_died(
    bwrap_demo: tuple[subprocess.CompletedProcess[str], Path, Path],
) -> None:
    out = bwrap_demo[0].stdout
    m = re.search(
        r"the demo kills textkit's worker \(pid (\d+)\) with SIGKILL while "
        r"textkit\.sleep\(seconds=10\) runs, as a crash would\n",
        out,
    )
    assert m, out
    assert (
        f"worker killed mid-call -> [worker_crashed] worker for textkit 1.0.0 (pid {m[1]}) "
        "was killed by `mcphost demo` on purpose (SIGKILL) while call"
    ) in out
    assert "out of memory" not in out


@pytest.mark.slow
@pytest.mark.bwrap
def test_demo_names_the_tool_once_in_its_invalid_arguments_error(
    bwrap_demo: tuple[subprocess.CompletedProcess[str], Path, Path],
) -> None:
    (line,) = [x for x in bwrap_demo[0].stdout.splitlines() if "[invalid_arguments]" in x]
    assert line.strip().startswith(
        "textkit.upper: [invalid_arguments] invalid arguments: Expected `str`, got `int` - "
        "at `$.text`"
    ), line
    assert line.count("textkit.upper") == 1, line


@pytest.mark.slow
def test_demo_without_bubblewrap_warns_and_runs_with_rlimits(tmp_path: Path) -> None:
    # Only this environment's bin directory on PATH: no bwrap to be found.
    proc, operator = run_demo(tmp_path, path=str(Path(sys.executable).parent))
    assert proc.returncode == 0, proc.stdout
    out = proc.stdout
    assert "WARNING: bubblewrap cannot run here: the bwrap binary is not installed" in out
    assert "Plugins run with isolation 'rlimits' only" in out
    assert "isolation rlimits" in out
    check_swap_and_rollback(out)
    check_the_rest(out)
    check_nothing_left(proc, tmp_path, operator)


def test_copy_example_makes_a_new_version_whose_echo_answers_differently(tmp_path: Path) -> None:
    copy = copy_example(
        EXAMPLES / "textkit", tmp_path / "tk", version="1.1.0", echo_suffix=" [1.1]"
    )
    assert 'version = "1.1.0"' in (copy / "pyproject.toml").read_text()
    code = (copy / "mcphost_textkit" / "__init__.py").read_text()
    assert '__version__ = "1.1.0"' in code
    assert "    return text + ' [1.1]'\n" in code
    assert not (copy / "build").exists() and not list(copy.glob("*.egg-info"))
    original = (EXAMPLES / "textkit" / "mcphost_textkit" / "__init__.py").read_text()
    assert '__version__ = "1.0.0"' in original and "[1.1]" not in original


def test_copy_example_refuses_an_echo_suffix_for_a_plugin_without_echo(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only textkit's echo"):
        copy_example(EXAMPLES / "mathkit", tmp_path / "mk", echo_suffix=" [x]")
