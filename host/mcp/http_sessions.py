"""The handshake-era sessions of the HTTP endpoint, by ``Mcp-Session-Id``: bounded in
number and forgotten when idle.

A session is idle while it has no request in flight and no open GET stream; one idle for
longer than the idle timeout is closed and its id forgotten, so the client's next request
gets 404 and it initialises again, as the streamable HTTP transport prescribes. When the
table is full a new ``initialize`` is refused (503) rather than pushing out a live one.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Iterator

from mcphost.security.tokens import Token

from .outbox import Outbox
from .session import Session

__all__ = ["DEFAULT_IDLE_SECONDS", "DEFAULT_MAX_SESSIONS", "HttpSession", "SessionTable"]

DEFAULT_IDLE_SECONDS = 30 * 60.0
DEFAULT_MAX_SESSIONS = 1000


class HttpSession:
    """One session as the HTTP endpoint keeps it: who owns it, its stream, its use."""

    __slots__ = ("busy", "last_used", "owner", "session", "sid", "stream")

    def __init__(self, sid: str, session: Session, owner: Token | None) -> None:
        self.sid = sid
        self.session = session
        #: The token that made it: only that token may use it.
        self.owner = owner
        #: The outbox of its open GET stream, if any.
        self.stream: Outbox | None = None
        self.busy = 0
        self.last_used = time.monotonic()

    def idle_for(self, now: float) -> float:
        if self.busy or self.stream is not None:
            return 0.0
        return now - self.last_used

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1
            self.last_used = time.monotonic()


class SessionTable:
    """Sessions by id, at most ``limit``, each closed after ``idle_seconds`` unused."""

    def __init__(
        self,
        *,
        limit: int = DEFAULT_MAX_SESSIONS,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        on_close: Callable[[HttpSession], None] | None = None,
    ) -> None:
        self.limit = limit
        self.idle_seconds = idle_seconds
        self._on_close = on_close
        self._sessions: dict[str, HttpSession] = {}
        self._reaper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[HttpSession]:
        return iter(list(self._sessions.values()))

    @property
    def full(self) -> bool:
        self.expire()
        return len(self._sessions) >= self.limit

    def add(self, session: Session, owner: Token | None) -> HttpSession:
        sid = secrets.token_urlsafe(24)
        entry = HttpSession(sid, session, owner)
        session.session_id = sid
        self._sessions[sid] = entry
        return entry

    def get(self, sid: str) -> HttpSession | None:
        entry = self._sessions.get(sid)
        if entry is not None and entry.idle_for(time.monotonic()) > self.idle_seconds:
            self.close(sid)
            return None
        return entry

    def close(self, sid: str) -> HttpSession | None:
        entry = self._sessions.pop(sid, None)
        if entry is not None:
            entry.session.close()
            if entry.stream is not None:
                entry.stream.close()
            if self._on_close is not None:
                self._on_close(entry)
        return entry

    def expire(self) -> int:
        """Close every session idle for too long; returns how many."""
        now = time.monotonic()
        old = [s.sid for s in self._sessions.values() if s.idle_for(now) > self.idle_seconds]
        for sid in old:
            self.close(sid)
        return len(old)

    def start(self) -> None:
        """Begin expiring idle sessions in the background."""
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        period = max(0.05, min(self.idle_seconds / 4, 30.0))
        while True:
            await asyncio.sleep(period)
            self.expire()

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for sid in list(self._sessions):
            self.close(sid)
