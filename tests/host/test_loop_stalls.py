"""The event loop stays responsive while the host starts jailed workers, swaps a
version and restarts a crashed worker: nothing on it blocks for long.

The scenario runs in a fresh process (``stall_scenario.py``) so the sandbox probe of a
host's first start is measured too. A ticker sleeps 1 ms at a time; each step of the
loop is timed. Before the sandbox probe, plugin discovery, jail preparation (the data
directory handed to the worker's uid), a worker's cleanup and ``stats()`` moved off the
loop, single steps took 140-680 ms here (start 390-680, swap 140-470, crash 200-330);
after, 2-45 ms, and up to 80 ms on a machine loaded to 4 times its cores. The bound sits
well above that and below the old stalls; it is a responsiveness bound, not a speed
assertion. The gap between ticks is printed too: on a loaded machine it also counts the
time the process waits for a CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bwrap_check import require_bwrap

SCENARIO = Path(__file__).with_name("stall_scenario.py")
#: The longest one step of the event loop may take, in milliseconds.
STEP_BOUND_MS = 150.0


def test_no_step_of_the_event_loop_stalls_it_while_workers_start_swap_and_crash(
    tmp_path: Path, no_leftover_workers: None
) -> None:
    require_bwrap()
    proc = subprocess.run(
        [sys.executable, str(SCENARIO), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stalls = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"longest stall per phase, ms (bound {STEP_BOUND_MS:g} per step): {stalls}")
    over = {
        phase: s["step"]
        for phase, s in stalls.items()
        if phase in ("start", "swap", "crash") and s["step"] > STEP_BOUND_MS
    }
    assert not over, f"the event loop was held longer than {STEP_BOUND_MS:g} ms: {over}"
