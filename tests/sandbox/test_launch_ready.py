"""What a jailed worker's first launch plan waits for once the host has chosen its backend.

The host chooses the backend on a thread beside its other set-up (``isolation_backend``);
the seccomp filter is built there too (finding libseccomp runs ``ldconfig -p``), so the
first launch plan, on the way to the first call, runs no process. Checked in a fresh
interpreter (the filter and libseccomp are loaded once per process), seeing processes
through the interpreter's audit events.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bwrap_check import require_bwrap

pytestmark = pytest.mark.bwrap

SCRIPT = """
import json, socket, sys
started = []
recording = False

def hook(event, args):
    if recording and event == "subprocess.Popen":
        started.append([str(a) for a in args[1]])

sys.addaudithook(hook)
from mcphost.host.config import HostConfig
from mcphost.host.isolation_backend import isolation_backend
from mcphost.sandbox.isolation import WorkerSpec

backend = isolation_backend(HostConfig(isolation="bwrap"))
spec = WorkerSpec(
    plugin="probe", version="1.0", entry="probe:plugin", paths=[],
    data_dir=sys.argv[1], work_dir=sys.argv[2],
)
a, b = socket.socketpair()
recording = True
plan = backend.prepare(spec, b.fileno())
recording = False
plan.cleanup()
print(json.dumps(started))
"""


def test_the_first_launch_plan_runs_no_process(tmp_path: Path) -> None:
    require_bwrap()
    (tmp_path / "data").mkdir()
    (tmp_path / "work").mkdir()
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "data"), str(tmp_path / "work")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == [], "the seccomp filter was built with the backend"
