"""Optional extras a test needs: in CI (``CI`` set, where ``.ci/run`` installs every
extra) a missing one fails the test; elsewhere it skips, saying what to install."""

from __future__ import annotations

import os
from typing import Any

import pytest


def require_ray() -> Any:
    """The ``ray`` module, or fail (CI) / skip (elsewhere) without the ``ray`` extra."""
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("Ray is not installed: install it with pip install -e '.[ray]'")
        pytest.skip("Ray is not installed (pip install -e '.[ray]'); CI fails here instead")
    return ray
