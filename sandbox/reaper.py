"""What a bubblewrap jail leaves to the host: its init to end and reap, its cgroup.

bubblewrap starts the jail's init (pid 1 inside) as its own child and, with
``--die-with-parent``, asks the kernel to kill that init when bubblewrap dies. The init
arms that signal only after it has set the jail up, so an init whose bubblewrap is
killed early (a start that is cancelled, a host under load) lives on, adopted by the
host (a child subreaper). Such a jail keeps the worker's pipes open, and anything
waiting for them waits for ever.

So one thread per host follows every jail: it learns the init's pid from bubblewrap's
info fd as soon as bubblewrap writes it, kills the init once its bubblewrap is gone
(whether or not the init armed its own signal), reaps it, and removes the jail's cgroup
once the jail is over and its plan was cleaned up. A bubblewrap killed before it wrote
the init's pid leaves an init the thread finds among the host's children by its command
line. Nothing here blocks the host's event loop for more than a moment.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import select
import signal
import sys
import threading
import time
from collections.abc import Callable

from .cgroups import WorkerCgroup
from .isolation import ResourceUsage

__all__ = ["Jail", "process_birth", "reap_if_adopted", "set_subreaper"]

_PR_SET_CHILD_SUBREAPER = 36
#: How long :meth:`Jail.cleanup` waits for the jail to be gone before leaving the rest
#: to the thread; a jail is normally gone within milliseconds of its worker.
CLEANUP_WAIT = 1.0
#: A jail whose bubblewrap said nothing for this long is looked for among the host's
#: children (its init may have been adopted), until it is this old.
_LOST_AFTER = 0.25
_LOST_UNTIL = 30.0
#: Looks, 50 ms apart, for the init of a bubblewrap that ended without naming it.
_EOF_SCANS = 3


class Jail:
    """The host's side of one jail: the fds only the child needed, the jail's bubblewrap
    and init (followed by the jail thread), and its cgroup."""

    def __init__(
        self, argv: list[str], info_fd: int, child_fds: list[int], cgroup: WorkerCgroup | None
    ) -> None:
        os.set_blocking(info_fd, False)
        #: The jail's command line as /proc shows it (bubblewrap's init has the same).
        self.cmdline = b"".join(os.fsencode(a) + b"\0" for a in argv)
        self.started = time.monotonic()
        self.child_fds = child_fds
        self.cgroup = cgroup
        #: Set once the jail is over and its cgroup removed (after :meth:`cleanup`).
        self.released = threading.Event()
        # Owned by the jail thread (under _THREAD.lock); only it closes these fds.
        self._info_fd: int | None = info_fd
        #: What bubblewrap wrote on its info fd so far; ``None`` once the init is known.
        self._info: bytes | None = b""
        #: The info fd ended without the init's pid: looked for among the children this
        #: many times (bubblewrap's children are adopted just after its fds close).
        self._info_eof = False
        self._eof_scans = 0
        self._bwrap_pidfd: int | None = None
        self._spawned_pidfd: int | None = None
        self._bwrap_gone = False
        self._init_pidfd: int | None = None
        self._init_gone = False
        self._init_killed = False
        self._cleaning = False
        if cgroup is not None:
            _UNCLEANED.add(cgroup)
        _THREAD.add(self)

    # -- called by the host ----------------------------------------------------------
    def _close_child_fds(self) -> None:
        fds, self.child_fds = self.child_fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def on_spawn(self, pid: int) -> None:
        """bubblewrap runs as ``pid``: close the fds only it needed; follow it."""
        self._close_child_fds()
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except OSError:
            pidfd = None
        with _THREAD.lock:
            self._spawned_pidfd = pidfd
        _THREAD.wake()

    def usage(self) -> ResourceUsage:
        """Memory in use and CPU time of everything in the worker's cgroup."""
        cgroup = self.cgroup
        if cgroup is None:
            return ResourceUsage()
        memory = cgroup.memory_bytes()
        return ResourceUsage(
            memory=memory,
            memory_source="cgroup" if memory is not None else None,
            cpu_seconds=cgroup.cpu_seconds(),
        )

    def cleanup(self) -> None:
        """End the jail if anything of it is left, reap its init and remove its cgroup.

        Waits a moment (:data:`CLEANUP_WAIT`) for that to be done, then leaves the rest
        to the jail thread. A second call does nothing more.
        """
        self._close_child_fds()
        with _THREAD.lock:
            self._cleaning = True
        _THREAD.wake()
        self.released.wait(CLEANUP_WAIT)

    # -- the jail thread's steps (under _THREAD.lock) ----------------------------------
    def _watched(self) -> list[int]:
        fds = [] if self._info_fd is None else [self._info_fd]
        if self._bwrap_pidfd is not None and not self._bwrap_gone:
            fds.append(self._bwrap_pidfd)
        if self._init_pidfd is not None and not self._init_gone:
            fds.append(self._init_pidfd)
        return fds

    def _ready(self, fd: int) -> None:
        if fd == self._info_fd:
            self._read_info()
        elif fd == self._bwrap_pidfd:
            self._bwrap_gone = True
        elif fd == self._init_pidfd:
            self._init_gone = True

    def _read_info(self) -> None:
        """bubblewrap writes ``{"child-pid": N, ...}`` right after it creates the init.

        The read end stays open until bubblewrap closes its end: closing it early would
        kill a bubblewrap still writing (SIGPIPE).
        """
        assert self._info_fd is not None
        try:
            chunk = os.read(self._info_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            os.close(self._info_fd)
            self._info_fd = None
            self._info_eof = self._info is not None
        if self._info is None:
            return  # the init is known; the rest does not matter
        self._info += chunk
        # The pid is all the host needs; bubblewrap may be killed while it writes the rest.
        m = re.search(rb'"child-pid"\s*:\s*(\d+)\s*[,}\n]', self._info)
        if m:
            self._info = None
            self._found_init(int(m[1]))

    def _found_init(self, pid: int) -> None:
        try:
            self._init_pidfd = os.pidfd_open(pid)
        except OSError:
            return  # already gone, and reaped by bubblewrap
        if self._bwrap_pidfd is not None or self._spawned_pidfd is not None:
            return
        # Not told who bubblewrap is (a start cancelled before it was told): the init's
        # parent is bubblewrap, or this host once bubblewrap has died.
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            if ppid in (os.getpid(), 0, 1):
                raise ProcessLookupError
            self._bwrap_pidfd = os.pidfd_open(ppid)
        except (OSError, ValueError, IndexError):
            self._bwrap_gone = True

    def _unknown(self, now: float) -> bool:
        """bubblewrap has not said who the init is, and is gone or was never named."""
        if self._info is None or not (
            self._bwrap_gone or (self._bwrap_pidfd is None and self._spawned_pidfd is None)
        ):
            return False
        if self._info_eof:
            return self._eof_scans < _EOF_SCANS
        return self._info_fd is not None and now - self.started < _LOST_UNTIL

    def _lost(self, now: float) -> bool:
        """Unknown for a while (or for good): its init may have been adopted by the host."""
        return self._unknown(now) and (self._info_eof or now - self.started > _LOST_AFTER)

    def _find(self, children: list[int]) -> None:
        """Look for this jail's bubblewrap, or its adopted init, among the host's children."""
        for pid in children:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read()
                if cmdline != self.cmdline:
                    if not cmdline:
                        _reap_adopted_init(pid)
                    continue
                with open(f"/proc/{pid}/status", "rb") as f:
                    nspid = next(line for line in f if line.startswith(b"NSpid:")).split()
                pidfd = os.pidfd_open(pid)
            except (OSError, StopIteration):
                continue
            if len(nspid) > 2:  # pid 1 of a namespace of its own: the init, bubblewrap gone
                self._init_pidfd, self._bwrap_gone, self._info = pidfd, True, None
                return
            if self._bwrap_pidfd is None and self._spawned_pidfd is None:
                self._bwrap_pidfd = pidfd
            else:
                os.close(pidfd)

    def _advance(self) -> None:
        if self._spawned_pidfd is not None:
            if self._bwrap_pidfd is None:
                self._bwrap_pidfd = self._spawned_pidfd
            else:
                os.close(self._spawned_pidfd)
            self._spawned_pidfd = None
        if self._cleaning and self._bwrap_pidfd is not None and not self._bwrap_gone:
            # The worker is finished with: whatever of the jail still runs goes.
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self._bwrap_pidfd, signal.SIGKILL)
        if self._bwrap_gone and self._init_pidfd is not None and not self._init_killed:
            # bubblewrap is gone: its init must go too, whether or not it armed its
            # parent-death signal in time. Killing pid 1 ends every process of the jail.
            self._init_killed = True
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self._init_pidfd, signal.SIGKILL)
        if self._bwrap_gone and self._init_gone and self._init_pidfd is not None:
            # Reaped by bubblewrap, or adopted by this host (a subreaper) and reaped here.
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PIDFD, self._init_pidfd, os.WEXITED | os.WNOHANG)
            os.close(self._init_pidfd)
            self._init_pidfd = None
        if self._bwrap_gone and self._bwrap_pidfd is not None:
            os.close(self._bwrap_pidfd)
            self._bwrap_pidfd = None
        if self._cleaning and self._over() and not self.released.is_set():
            if self._left_behind():
                return  # followed now: killed and reaped by the steps above, then released
            cgroup = self.cgroup
            if cgroup is None or cgroup.try_remove():
                if cgroup is not None:
                    _UNCLEANED.discard(cgroup)
                self.released.set()

    def _left_behind(self) -> bool:
        """A last look before the jail counts as over: its init may have been adopted by
        the host without the jail ever learning its pid (bubblewrap killed before it
        wrote it, while the init still held the info fd). If a child of the host still
        runs this jail's command line, follow it; True when one was found."""
        if self._info is None:
            return False  # the init was known, followed and reaped
        self._find(_children())
        return self._init_pidfd is not None

    def _over(self) -> bool:
        """Nothing of the jail runs or waits to be reaped (as far as the host can tell)."""
        bwrap_done = self._bwrap_gone or (self._bwrap_pidfd is None and self._spawned_pidfd is None)
        return (
            self._info_fd is None
            and self._init_pidfd is None
            and bwrap_done
            and not self._unknown(time.monotonic())
        )

    def _retrying(self) -> bool:
        """Cleaned up but the cgroup is not empty yet: try again shortly."""
        return self._cleaning and self._over() and not self.released.is_set()


class _JailThread:
    """The one thread that follows every jail of this process (see the module docstring)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jails: set[Jail] = set()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None
        self._stopping = False

    def add(self, jail: Jail) -> None:
        with self.lock:
            self.jails.add(jail)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="mcphost-jails", daemon=True)
                self._thread.start()
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    def stop(self, timeout: float) -> None:
        """Let the thread finish the cleanups under way (up to ``timeout`` seconds) and
        end, so it runs no code while the interpreter finalizes."""
        thread = self._thread
        if thread is None:
            return
        with self.lock:
            self._stopping = True
        self.wake()
        thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self.lock:
                if self._stopping and not any(j._cleaning for j in self.jails):
                    return
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            owners: dict[int, Jail] = {}
            with self.lock:
                for jail in self.jails:
                    for fd in jail._watched():
                        poller.register(fd, select.POLLIN)
                        owners[fd] = jail
                retrying = any(jail._retrying() for jail in self.jails)
                now = time.monotonic()
                unknown = [j for j in self.jails if j._unknown(now)]
            if retrying or any(j._info_eof for j in unknown):
                timeout: int | None = 20 if retrying else 50
            else:
                timeout = int(_LOST_AFTER * 1000) if unknown else None
            events = poller.poll(timeout)
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 4096):
                    pass
            with self.lock:
                for fd, _ in events:
                    owner = owners.get(fd)
                    if owner is not None:
                        owner._ready(fd)
                lost = [j for j in self.jails if j._lost(time.monotonic())]
                if lost:
                    children = _children()
                    for jail in lost:
                        jail._find(children)
                        jail._eof_scans += jail._info_eof
                for jail in list(self.jails):
                    # One jail's trouble must not stop the thread from following the others.
                    with contextlib.suppress(OSError):
                        jail._advance()
                    if jail.released.is_set():
                        self.jails.discard(jail)


def _nspid_depth(status: bytes) -> int:
    """How many pid namespaces a process is seen in, from its /proc status."""
    for line in status.splitlines():
        if line.startswith(b"NSpid:"):
            return len(line.split()) - 1
    return 1


def _reap_adopted_init(pid: int) -> None:
    """Reap ``pid`` if it is a dead jail init that this host adopted.

    An init whose bubblewrap was killed before it named the init, and that then died
    (its parent-death signal, or its worker gone), is a zombie child of the host: its
    command line reads empty, so no jail can tell it is its own, yet only the host (its
    subreaper) can reap it. A zombie that was pid 1 of a pid namespace below the host's
    is such an init; the host never forks one itself (its own children, bubblewrap
    among them, live in its namespace), so reaping it takes nobody's exit status.
    """
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            status = f.read()
        with open("/proc/self/status", "rb") as f:
            own = f.read()
    except OSError:
        return
    zombie = any(
        line.startswith(b"State:") and b"Z" in line.split()[1:2] for line in status.splitlines()
    )
    if zombie and _nspid_depth(status) > _nspid_depth(own):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG)


def process_birth(pid: int) -> tuple[int, int] | None:
    """``(parent pid, start time in clock ticks)`` of process ``pid`` as /proc shows it
    now (None when it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def reap_if_adopted(pid: int, birth: tuple[int, int] | None) -> bool:
    """Reap ``pid`` if it is a dead process this one adopted: ``birth`` (from
    :func:`process_birth` while it ran) says another process was its parent, it is now
    a zombie child of this one (its subreaper: :func:`set_subreaper`), and it started
    at the same time (the same process, not a later one given its pid). Nobody here
    forked it, so no one here waits for it and reaping it takes nobody's exit status.
    Returns whether it is gone (reaped now, or not this process's to reap any more)."""
    me = os.getpid()
    if birth is None or birth[0] == me:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        state, ppid, started = fields[0], int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return True
    if started != birth[1] or ppid != me:
        return True  # another process by now, or not adopted by this one
    if state != b"Z":
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG)
    return True


def _children() -> list[int]:
    """The pids of this process's children, adopted ones included."""
    pids: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/children") as f:
                pids += [int(p) for p in f.read().split()]
    return pids


_THREAD = _JailThread()

#: Cgroups of workers whose plan was not cleaned up yet; removed when the host exits.
_UNCLEANED: set[WorkerCgroup] = set()


@atexit.register
def _remove_uncleaned_cgroups() -> None:
    """At exit: the jail thread ends first (it must run no code while the interpreter
    finalizes), then the cgroups of plans never cleaned up go."""
    _THREAD.stop(CLEANUP_WAIT)
    for cgroup in list(_UNCLEANED):
        with contextlib.suppress(OSError):
            cgroup.remove(timeout=0.5)
    _UNCLEANED.clear()


_subreaper_set = False


def set_subreaper() -> None:
    """Make the host adopt orphans, so a jail's init left by bubblewrap can be reaped."""
    global _subreaper_set
    if _subreaper_set or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    prctl: Callable[..., int] = libc.prctl
    if prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0:
        _subreaper_set = True
