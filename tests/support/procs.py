"""Waiting, with a bound, for a process to end, without racing it.

A check such as ``not pid_exists(pid) or Process(pid).status() == "zombie"`` looks once
(so it fails when the process is about to end) and races the process (it can end between
the two calls, and ``Process(pid)`` then raises). These helpers wait on a pidfd instead:
it becomes readable when the process exits, it reaps nothing (the process's parent, such
as asyncio's child watcher, still collects the exit status), and once open it names that
one process even if its pid is later reused.

"Gone" means exited: reaped, or a zombie whose parent has not collected it yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select

import psutil

__all__ = ["assert_process_gone", "wait_process_gone"]


def _pidfd(proc: int | psutil.Process) -> int | None:
    """A pidfd for the process, or None when it is already reaped.

    Given a :class:`psutil.Process` (which remembers when its process started), a pid
    that now belongs to a later process counts as gone.
    """
    pid = proc if isinstance(proc, int) else proc.pid
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    if isinstance(proc, psutil.Process) and not proc.is_running():
        os.close(fd)  # the pid was reused: the process we meant has ended
        return None
    return fd


def _describe(proc: int | psutil.Process) -> str:
    pid = proc if isinstance(proc, int) else proc.pid
    try:
        p = psutil.Process(pid)
        return f"process {pid} ({p.name()}, {p.status()})"
    except psutil.Error:
        return f"process {pid}"


def assert_process_gone(proc: int | psutil.Process, timeout: float, *, reap: bool = False) -> None:
    """Fail unless the process has exited within ``timeout`` seconds.

    With ``reap``, a process that is a child of this one is then reaped: one this test
    process adopted (it is a child subreaper, as every host is) when its parent died,
    which nobody else will collect and later tests would see as a leftover zombie.
    Never reap a child an event loop is watching: it would lose its exit status.

    This blocks: from a coroutine whose event loop must act for the process to end, use
    :func:`wait_process_gone`.
    """
    fd = _pidfd(proc)
    if fd is None:
        return
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        ended = poller.poll(int(timeout * 1000))
        assert ended, f"{_describe(proc)} still runs after {timeout} s"
        if reap:
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG)
    finally:
        os.close(fd)


async def wait_process_gone(proc: int | psutil.Process, timeout: float) -> None:
    """Like :func:`assert_process_gone`, waiting on the running event loop."""
    fd = _pidfd(proc)
    if fd is None:
        return
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    loop.add_reader(fd, lambda: ended.done() or ended.set_result(None))
    try:
        await asyncio.wait_for(ended, timeout)
    except TimeoutError:
        raise AssertionError(f"{_describe(proc)} still runs after {timeout} s") from None
    finally:
        loop.remove_reader(fd)
        os.close(fd)
