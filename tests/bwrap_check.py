"""The one check every bubblewrap test makes first: in CI (``CI`` or
``MCPHOST_REQUIRE_BWRAP`` set) a missing bubblewrap fails the test, elsewhere it skips."""

from __future__ import annotations

import os

import pytest


def bwrap_required() -> bool:
    """In CI (or when asked) a missing bubblewrap is a failure, never a skip."""
    return bool(os.environ.get("CI") or os.environ.get("MCPHOST_REQUIRE_BWRAP"))


def require_bwrap() -> None:
    """Call at the top of a test (or fixture) that needs bubblewrap."""
    from mcphost.sandbox.bwrap import BubblewrapBackend

    ok, why = BubblewrapBackend().available()
    if ok:
        return
    if bwrap_required():
        pytest.fail(f"bubblewrap is required here but cannot run: {why}")
    pytest.skip(f"bubblewrap cannot run here: {why}")
