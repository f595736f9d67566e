"""Starting a worker's process, the same on every event loop.

The standard library's ``subprocess`` starts it, never the loop: libuv (uvloop) has no
``close_fds``, so a child it spawns inherits every inheritable descriptor of the host
(uvloop's own duplicates of stdio, pipes), which a sandboxed worker must never hold.
``subprocess.Popen`` closes every descriptor but the ones passed, in the child, whichever
loop runs. The loop then follows the process: its stdout and stderr as read pipes, its
exit through a pidfd (a thread waiting for it where pidfds are missing).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import IO

from .loops import pipe_file
from .settle import wait_out

__all__ = ["WorkerProcess", "start_process"]


class WorkerProcess:
    """A started process followed on the running loop: ``stdout``, ``stderr``,
    ``returncode`` (negative for a signal, as with ``subprocess``), ``wait()``."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self._pidfd: int | None = None

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        """The exit status, once the process has ended (and been reaped)."""
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        """SIGKILL the process (not its group) if it has not been reaped yet."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    async def end(self) -> None:
        """SIGKILL the process and wait until it is reaped, whatever cancellation comes
        meanwhile (the caller raises its own error after): a start that fails or is
        cancelled leaves no zombie behind, even when the loop closes right after."""
        self.kill()
        await wait_out(self._exited)

    def _follow(self) -> None:
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # an old kernel: a thread waits instead
            threading.Thread(
                target=self._wait_in_thread, name=f"mcphost-wait-{self.pid}", daemon=True
            ).start()
            return
        self._loop.add_reader(self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        rc = self._popen.poll()
        if rc is None:
            return  # not reaped yet (the pidfd turns readable once it is a zombie)
        self._stop_following()
        if not self._exited.done():
            self._exited.set_result(rc)

    def _stop_following(self) -> None:
        if self._pidfd is not None:
            fd, self._pidfd = self._pidfd, None
            with contextlib.suppress(Exception):  # a closed loop no longer watches it
                self._loop.remove_reader(fd)
            os.close(fd)

    def _wait_in_thread(self) -> None:
        rc = self._popen.wait()
        with contextlib.suppress(RuntimeError):  # the loop has closed
            self._loop.call_soon_threadsafe(self._set_exit, rc)

    def _set_exit(self, rc: int) -> None:
        if not self._exited.done():
            self._exited.set_result(rc)


async def _pipe_reader(
    loop: asyncio.AbstractEventLoop, pipe: IO[bytes], limit: int
) -> asyncio.StreamReader:
    """The read end of ``pipe`` as a stream on the loop; ``pipe`` is closed here and
    the transport owns (a duplicate of) its fd, closed once (see loops.pipe_file).

    A start cancelled while the loop connects the pipe has already handed the fd to a
    transport, which closes it as it closes (in a callback, later): closing the number
    here as well closed it twice, the second time under whoever had been given that
    number meanwhile (a jail's pidfd, another worker's pipe). The file object is closed
    instead: under the stdlib loop that is the transport's own close, done once whoever
    comes first; under uvloop the fd is libuv's alone.
    """
    fd = os.dup(pipe.fileno())
    pipe.close()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    file = pipe_file(fd, "rb")
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), file)
    except BaseException:
        with contextlib.suppress(OSError):
            file.close()
        raise
    return reader


async def start_process(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None,
    cwd: str | None,
    pass_fds: Sequence[int],
    preexec_fn: Callable[[], None] | None,
    limit: int = 64 * 1024,
) -> WorkerProcess:
    """Start ``argv`` in a new session with stdin from /dev/null, stdout and stderr as
    pipes read on the loop, only ``pass_fds`` inherited; the process is followed on the
    running loop."""
    loop = asyncio.get_running_loop()
    popen = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        pass_fds=tuple(pass_fds),
        close_fds=True,
        preexec_fn=preexec_fn,
        start_new_session=True,
    )
    proc = WorkerProcess(popen)
    proc._follow()
    try:
        assert popen.stdout is not None and popen.stderr is not None
        stdout, stderr = popen.stdout, popen.stderr
        popen.stdout = popen.stderr = None  # the transports own their ends from here
        proc.stdout = await _pipe_reader(loop, stdout, limit)
        proc.stderr = await _pipe_reader(loop, stderr, limit)
    except BaseException:
        await proc.end()
        raise
    return proc
