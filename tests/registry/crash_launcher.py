"""Run the ``mcphost`` CLI with one crash point armed, for the crash-safety tests.

``python crash_launcher.py POINT ARGS...`` is ``mcphost ARGS...`` that kills itself with
SIGKILL at POINT. Only this test-suite file arms a point; the installed product has no
way to do it from outside its own process.
"""

from __future__ import annotations

import sys

from mcphost.host.cli import main
from mcphost.registry import crash

if __name__ == "__main__":
    crash.arm(sys.argv[1])
    main(sys.argv[2:], prog_name="mcphost")
