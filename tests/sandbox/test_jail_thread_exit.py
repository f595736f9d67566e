"""The thread that follows jails ends before the interpreter finalizes: a daemon thread
still running Python code while the interpreter tears down can crash the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from bwrap_check import require_bwrap

#: Registered before mcphost is imported, so it runs after mcphost's own exit handlers.
_PROGRAM = textwrap.dedent(
    """
    import atexit, sys, threading

    def threads_left():
        print(sorted(t.name for t in threading.enumerate()), file=sys.stderr)

    atexit.register(threads_left)
    from mcphost.sandbox.bwrap import BubblewrapBackend

    ok, why = BubblewrapBackend().available()  # a trial jail: the jail thread starts
    assert ok, why
    print(sorted(t.name for t in threading.enumerate()))
    """
)


def test_the_jail_thread_has_ended_when_a_process_that_ran_a_jail_exits() -> None:
    require_bwrap()
    proc = subprocess.run(
        [sys.executable, "-c", _PROGRAM], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['MainThread', 'mcphost-jails']", proc.stdout
    assert proc.stderr.strip() == "['MainThread']", proc.stderr
