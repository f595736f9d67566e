"""The notifications a session sends on its own: a call's progress and log lines, and the
notice that stands in for notifications a slow client lost."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from .jsonrpc import notification
from .server import LOG_LEVELS

if TYPE_CHECKING:
    from .session import Notifier

__all__ = ["dropped_notice", "log_message", "progress_key", "progress_sender"]


def dropped_notice(count: int) -> bytes:
    """The log notification that stands in for ``count`` notifications a client lost."""
    return notification(
        "notifications/message",
        {
            "level": "warning",
            "logger": "mcphost",
            "data": f"{count} log lines or progress notifications dropped "
            "(the client did not read them fast enough)",
        },
    )


def log_message(plugin: str, level: str, message: str) -> bytes:
    """A plugin's log line as ``notifications/message`` (unknown levels count as info)."""
    if level not in LOG_LEVELS:
        level = "info"
    return notification(
        "notifications/message", {"level": level, "logger": plugin, "data": message}
    )


def progress_key(token: Any) -> Hashable | None:
    """Progress with the same token replaces older unsent progress (tokens are unique
    among a client's requests in flight)."""
    return token if isinstance(token, (int, str)) else None


def progress_sender(
    notifier: Notifier, token: Any
) -> Callable[[float, float | None, str | None], None]:
    """A progress callback that sends each of a call's reports down its ``notifier``."""

    def send(progress: float, total: float | None, message: str | None) -> None:
        params: dict[str, Any] = {"progressToken": token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message:
            params["message"] = message
        notifier.notify(notification("notifications/progress", params), key)

    key = progress_key(token)
    return send
