"""Waiting, with a bound, for a state nothing announces.

Prefer an event when there is one (:mod:`support.events`, a future, a line read); poll
with these only for a state that changes silently (a file a tool writes, a field of
``host.stats()``). Each fails with an :class:`AssertionError` naming what did not happen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["INTERVAL", "wait_until", "wait_until_sync"]

#: How long to sleep between two checks, in seconds.
INTERVAL = 0.01


async def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    *,
    interval: float = INTERVAL,
) -> None:
    """Return once ``predicate()`` is true; fail with ``what`` after ``timeout`` seconds.

    The predicate runs on the loop between sleeps of ``interval``; the loop goes on with
    its other work meanwhile."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not reached within {timeout}s: {what}")
        await asyncio.sleep(interval)


def wait_until_sync(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    *,
    interval: float = INTERVAL,
) -> None:
    """:func:`wait_until` for a test with no event loop (it blocks)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not reached within {timeout}s: {what}")
        time.sleep(interval)
