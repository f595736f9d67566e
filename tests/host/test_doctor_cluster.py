"""`mcphost doctor` and the cluster when none can be reached: with no [cluster] it says
so and never imports Ray; a cluster it cannot reach is a failed check, not a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from support.cli import run_mcphost

#: Runs the CLI, then says on stderr whether Ray was imported by the end.
WATCHED = [
    sys.executable,
    "-c",
    "import atexit, sys\n"
    "atexit.register(lambda: print('RAY IMPORTED' if 'ray' in sys.modules else 'no ray', "
    "file=sys.stderr))\n"
    "from mcphost.host.cli import main\n"
    "main()\n",
]


def test_doctor_without_a_cluster_says_so_and_never_imports_ray(home_dir: Path) -> None:
    proc = run_mcphost("doctor", home=home_dir, command=WATCHED)
    assert proc.returncode == 0, proc.stderr
    assert "cluster     none configured" in proc.stdout
    assert proc.stderr.strip().endswith("no ray")
    data = json.loads(run_mcphost("doctor", "--json", home=home_dir, command=WATCHED).stdout)
    assert data["cluster"] is None


def test_a_cluster_that_cannot_be_reached_is_a_failed_check(home_dir: Path) -> None:
    (home_dir / "config.toml").write_text(
        '[cluster]\nbackend = "ray"\naddress = "ray://127.0.0.1:1"\n'
    )
    proc = run_mcphost("doctor", home=home_dir)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("cluster "))
    assert line.startswith("cluster     ray at 'ray://127.0.0.1:1': ERROR: ")
    assert "Traceback" not in proc.stdout + proc.stderr
    data = json.loads(run_mcphost("doctor", "--json", home=home_dir).stdout)["cluster"]
    assert data["nodes"] == [] and data["error"]


def test_a_local_cluster_is_not_started_by_doctor(home_dir: Path) -> None:
    (home_dir / "config.toml").write_text('[cluster]\nbackend = "ray"\naddress = "local"\n')
    proc = run_mcphost("doctor", home=home_dir, command=WATCHED)
    assert "cluster     ray at 'local': a cluster of this machine only" in proc.stdout
    assert proc.stderr.strip().endswith("no ray")
