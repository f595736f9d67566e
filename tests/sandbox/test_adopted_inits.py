"""A dead jail init that the host adopted is reaped, and nothing else is.

bubblewrap killed before it named its jail's init leaves that init to the host (a child
subreaper). Once the init dies, its command line reads empty and no jail can recognise
it as its own; it stayed a zombie child of the host for good. The jail thread's search
for lost inits reaps such a zombie: one that was pid 1 of a pid namespace below the
host's, which the host never forks itself.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import psutil

from mcphost.sandbox import reaper


def _wait_for(check: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _exists(pid: int) -> bool:
    try:
        psutil.Process(pid)
    except psutil.NoSuchProcess:
        return False
    return True


def test_a_dead_namespace_init_adopted_by_the_host_is_reaped() -> None:
    reaper.set_subreaper()
    # unshare forks the init of a new pid namespace and waits for it; killing unshare
    # leaves that init to this process, as a killed bubblewrap leaves its jail's init.
    outer = subprocess.Popen(["unshare", "--pid", "--fork", "sleep", "0.3"])
    _wait_for(lambda: psutil.Process(outer.pid).children(), "the namespace's init")
    (init,) = psutil.Process(outer.pid).children()
    outer.kill()
    outer.wait()
    _wait_for(lambda: _zombie(init.pid), "the adopted init to die")
    assert init.pid in reaper._children()

    # Found among the children with an empty command line, as a jail's search finds it.
    reaper._reap_adopted_init(init.pid)

    assert not _exists(init.pid), "the adopted init was left a zombie"


def test_a_zombie_child_of_the_hosts_own_namespace_is_left_to_its_owner() -> None:
    own = subprocess.Popen(["true"])
    _wait_for(lambda: _zombie(own.pid), "the child to exit")

    reaper._reap_adopted_init(own.pid)

    assert _zombie(own.pid), "a child the host spawned itself was reaped under its owner"
    assert own.wait() == 0
