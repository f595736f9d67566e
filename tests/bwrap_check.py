"""The checks every jail test makes first: in CI (``CI`` or ``MCPHOST_REQUIRE_BWRAP`` set)
a missing prerequisite fails the test, elsewhere it skips.

The prerequisites are bubblewrap, a writable cgroup hierarchy (v2 with the pids and
memory controllers delegated, or v1 pids/memory), a kernel with Landlock, and a host
running as root. The CI machine has all of them (``.ci/run`` runs the suite as root on
a kernel with Landlock and cgroups), so none of them may be missing there.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mcphost.sandbox.bwrap import BubblewrapBackend
    from mcphost.sandbox.cgroups import CgroupManager


def bwrap_required() -> bool:
    """In CI (or when asked) a missing prerequisite is a failure, never a skip."""
    return bool(os.environ.get("CI") or os.environ.get("MCPHOST_REQUIRE_BWRAP"))


def _fail_in_ci(what: str, fix: str) -> None:
    """Fail the test when a missing prerequisite is not allowed here (CI)."""
    if bwrap_required():
        pytest.fail(f"{what}, which this test needs in CI (MCPHOST_REQUIRE_BWRAP); {fix}")


def require_bwrap() -> None:
    """Call at the top of a test (or fixture) that needs bubblewrap."""
    from mcphost.sandbox.bwrap import BubblewrapBackend

    ok, why = BubblewrapBackend().available()
    if ok:
        return
    if bwrap_required():
        pytest.fail(f"bubblewrap is required here but cannot run: {why}")
    pytest.skip(f"bubblewrap cannot run here: {why}")


def has_cgroups(backend: BubblewrapBackend) -> bool:
    """Whether workers get cgroups here, for a check that applies only then; in CI a
    machine without them fails instead of leaving the check out."""
    from mcphost.sandbox.cgroups import CgroupManager

    if backend.cgroups() is not None:
        return True
    _fail_in_ci(
        f"no writable cgroup hierarchy here ({CgroupManager.detect().describe()})",
        "run the suite as root on a machine with cgroup v2 (pids and memory controllers "
        "available) or cgroup v1 pids/memory mounted; `mcphost doctor` shows what it finds",
    )
    return False


def require_cgroups(backend: BubblewrapBackend) -> CgroupManager:
    """The writable cgroup hierarchy workers are placed in; fails in CI when there is none."""
    if not has_cgroups(backend):
        pytest.skip("no writable cgroup hierarchy here; workers rely on rlimits")
    manager = backend.cgroups()
    assert manager is not None
    return manager


#: The first kernel with each Landlock ABI the tests ask for.
_LANDLOCK_KERNEL = {1: "5.13", 2: "5.19", 3: "6.2", 4: "6.7"}


def require_landlock(backend: BubblewrapBackend, abi: int = 1) -> None:
    """Landlock of at least ``abi``; fails in CI when the kernel lacks it."""
    have = backend.landlock_abi()
    if have >= abi:
        return
    what = f"the kernel has no Landlock ABI {abi} (has {have})"
    _fail_in_ci(
        what,
        f"run the suite on Linux {_LANDLOCK_KERNEL.get(abi, '6.7')} or later with Landlock "
        "enabled (CONFIG_SECURITY_LANDLOCK=y and `landlock` in the kernel's lsm= list)",
    )
    pytest.skip(what)


def has_root(why: str) -> bool:
    """Whether the host runs as root, for a check that applies only then; in CI a
    non-root run fails instead of leaving the check out."""
    if os.geteuid() == 0:
        return True
    _fail_in_ci(f"the suite does not run as root ({why})", "run it as root, as .ci/run does")
    return False


def require_root(why: str) -> None:
    """The host runs as root; fails in CI when it does not."""
    if not has_root(why):
        pytest.skip(f"not root: {why}")
