"""The control socket: each running host answers ``mcphost status`` on a Unix socket.

One socket per host, ``<run dir>/hosts/<pid>.<n>.sock`` (``n`` tells apart the hosts of
one process), mode 0600 in a directory of mode 0700, and only a peer of the same user
is answered. A request is one JSON line (``{"get": "status"}``), the answer one JSON
line; a connection may ask again. Building the answer copies the host's counts on the
loop and sorts and encodes them on a thread: serving it never holds up a call.

Sockets whose process is gone are removed by the next host that starts and by
``mcphost status``. Unix socket paths are short (108 bytes on Linux): a longer one is
reached through ``/proc/self/fd`` of its directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .status import collect, sample, summarise

if TYPE_CHECKING:
    from ..host import Host

__all__ = [
    "ControlServer",
    "HostSocket",
    "alive",
    "ask",
    "find_hosts",
    "hosts_dir",
    "sockets",
]

log = logging.getLogger("mcphost.observe")
#: Longest request line a host reads.
MAX_REQUEST = 4096
#: Seconds between two samples of the call totals (calls/s is measured from them).
SAMPLE_INTERVAL = 1.0
_seq = itertools.count(1)
_SUN_PATH = 100


def hosts_dir(run_dir: Path) -> Path:
    """Where the hosts of a home put their control sockets."""
    return run_dir / "hosts"


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class HostSocket:
    """One control socket found in a hosts directory: its path and the pid it names."""

    def __init__(self, path: Path, pid: int) -> None:
        self.path = path
        self.pid = pid


def sockets(directory: Path, *, remove_stale: bool = True) -> list[HostSocket]:
    """The control sockets in ``directory`` whose process runs, in pid order; those of
    processes gone are removed (when ``remove_stale``) and left out."""
    found: list[HostSocket] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return found
    for name in names:
        stem, dot, ext = name.rpartition(".")
        pid_text = stem.partition(".")[0]
        if not dot or ext != "sock" or not pid_text.isdigit():
            continue
        path = directory / name
        pid = int(pid_text)
        # A pid that names no process here may still listen (a host in another pid
        # namespace sharing the home): only a socket nobody listens on is stale.
        if pid != os.getpid() and not alive(pid) and not _listening(path):
            if remove_stale:
                with contextlib.suppress(OSError):
                    path.unlink()
            continue
        found.append(HostSocket(path, pid))
    return sorted(found, key=lambda s: (s.pid, s.path.name))


def _listening(path: Path) -> bool:
    """Whether a process accepts connections on the socket at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            with _short(path) as address:
                s.connect(address)
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _short(path: Path) -> Iterator[str]:
    """``path`` as a Unix socket address: itself, or through ``/proc/self/fd`` of its
    directory when it is too long for one."""
    text = os.fsdecode(path)
    if len(os.fsencode(text)) < _SUN_PATH:
        yield text
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def ask(path: Path, request: dict[str, Any] | None = None, timeout: float = 2.0) -> Any:
    """Send one request to the control socket at ``path`` and return its answer
    (blocking; for the CLI). Raises OSError or ValueError when the host cannot answer."""
    line = json.dumps(request or {"get": "status"}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        with _short(path) as address:
            s.connect(address)
        s.sendall(line)
        buf = bytearray()
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    if not buf:
        raise ValueError(f"the host at {path} closed the connection without an answer")
    return json.loads(buf)


def find_hosts(run_dir: Path, timeout: float = 2.0) -> list[dict[str, Any]]:
    """The status of every host running on the home whose run directory is ``run_dir``;
    a socket that does not answer (a host closing, say) is left out."""
    out: list[dict[str, Any]] = []
    for hs in sockets(hosts_dir(run_dir)):
        try:
            answer = ask(hs.path, timeout=timeout)
        except (OSError, ValueError):
            continue
        if isinstance(answer, dict) and "status" in answer:
            answer["status"]["socket"] = str(hs.path)
            out.append(answer["status"])
    return out


class ControlServer:
    """Serves ``host``'s status on a control socket under ``run_dir`` while it runs."""

    def __init__(self, host: Host, run_dir: Path) -> None:
        self.host = host
        self.directory = hosts_dir(run_dir)
        self.path = self.directory / f"{os.getpid()}.{next(_seq)}.sock"
        self.started_at = time.time()
        self._origin = time.perf_counter()
        self._server: asyncio.AbstractServer | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._conns: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Bind the socket (mode 0600) and answer on it; sample call totals each second
        so the first ``status`` already has calls/s."""
        self._prepare_directory()
        for stale in sockets(self.directory):
            del stale  # listing removed the sockets of processes gone
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            with _short(self.path) as address:
                sock.bind(address)
            os.chmod(self.path, 0o600)
            sock.listen(16)
            sock.setblocking(False)
            self._server = await asyncio.start_unix_server(
                self._serve, sock=sock, limit=MAX_REQUEST
            )
        except BaseException:
            sock.close()
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise
        self._sampler = asyncio.create_task(self._sample())

    def _prepare_directory(self) -> None:
        d = self.directory
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise OSError(f"{d} is not a directory of this user")
        if st.st_mode & 0o077:
            os.chmod(d, 0o700)

    async def _sample(self) -> None:
        while True:
            try:
                sample(self.host, self._origin)
            except Exception:  # a host closing under the reader: try again later
                log.debug("status sample failed", exc_info=True)
            await asyncio.sleep(SAMPLE_INTERVAL)

    async def status(self) -> dict[str, Any]:
        """The host's snapshot (copied on the loop, summarised on a thread)."""
        raw = collect(self.host, self.started_at, self._origin)
        return await asyncio.to_thread(summarise, raw)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        try:
            if not _same_user(writer):
                return
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await self._answer(writer, {"error": "request too long"})
                    return
                if not line:
                    return
                await self._answer(writer, await self._handle(line))
        except (ConnectionError, OSError):
            return
        finally:
            if task is not None:
                self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"error": 'a request is one JSON object per line, e.g. {"get": "status"}'}
        if not isinstance(request, dict) or request.get("get") != "status":
            return {"error": 'unknown request; ask {"get": "status"}'}
        return {"status": await self.status()}

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, answer: dict[str, Any]) -> None:
        data = await asyncio.to_thread(_encode, answer)
        writer.write(data)
        await writer.drain()

    async def close(self) -> None:
        """Stop answering and remove the socket."""
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(BaseException):
                await self._sampler
        if self._server is not None:
            self._server.close()
        for t in list(self._conns):
            t.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        with contextlib.suppress(OSError):
            self.path.unlink()


def _encode(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer, default=str).encode() + b"\n"


def _same_user(writer: asyncio.StreamWriter) -> bool:
    """Whether the peer runs as this process's user (the socket's mode says so too)."""
    sock = writer.get_extra_info("socket")
    peercred = getattr(socket, "SO_PEERCRED", None)
    if peercred is None:  # not Linux: the socket's mode and its directory's decide
        return True
    if sock is None:
        return False
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i"))
    except OSError:
        return False
    _pid, uid, _gid = struct.unpack("3i", creds)
    return bool(uid == os.getuid())
