"""Waiting for work that must finish even when the task waiting for it is cancelled.

A thread cannot be stopped: a jail prepared, or a cleanup begun, in a thread finishes
whatever happens to the task that started it. Whoever cancels a start (closing a host,
a caller giving up) must still see what that start made undone before it goes on,
so the start waits the thread out and only then lets its cancellation through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["in_thread", "wait_out"]


async def wait_out(fut: asyncio.Future[Any]) -> bool:
    """Wait until ``fut`` is done, absorbing cancellations of the waiting task meanwhile.

    ``fut`` itself is never cancelled, and its result or exception is left in it.
    Returns True when the waiting task was cancelled meanwhile: the caller raises
    :class:`asyncio.CancelledError` once it has finished its own cleanup.
    """
    cancelled = False
    while not fut.done():
        try:
            await asyncio.wait([fut])
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


def in_thread(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> asyncio.Future[None]:
    """``fn()`` in the loop's default executor; run here and now when that executor is
    already shut down (the loop is ending), so the work is never skipped."""
    try:
        return loop.run_in_executor(None, fn)
    except RuntimeError:  # "Executor shutdown has been called"
        done: asyncio.Future[None] = loop.create_future()
        try:
            fn()
        except Exception as exc:
            done.set_exception(exc)
        else:
            done.set_result(None)
        return done
