"""The notifications a session sends on its own: a call's progress and log lines, and the
notice that stands in for notifications a slow client lost."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from .catalog import text_blocks
from .jsonrpc import notification
from .server import LOG_LEVELS

if TYPE_CHECKING:
    from .session import Notifier

__all__ = [
    "CLIENT_CAPABILITIES_KEY",
    "PRIORITY_META_KEY",
    "dropped_notice",
    "log_message",
    "partial_result",
    "partial_result_token",
    "progress_key",
    "progress_sender",
]

#: The key of a ``tools/call`` request's ``_meta`` that gives a streaming tool's
#: priority for admission, or a batch tool's call its level in the batch queue: a whole
#: number, 0 the highest (docs/streaming.md, docs/batching.md).
PRIORITY_META_KEY = "mcphost/priority"
#: Where a request's ``_meta`` declares the client's capabilities (2026-07-28 envelope).
CLIENT_CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"


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


def partial_result_token(meta: dict[str, Any]) -> str | int | None:
    """The ``partialResultToken`` of a request that opted in to partial tool results
    (draft SEP-2998: its ``_meta`` declares the ``partialResults`` client capability and
    carries the token), else None."""
    caps = meta.get(CLIENT_CAPABILITIES_KEY)
    token = meta.get("partialResultToken")
    wanted = isinstance(caps, dict) and "partialResults" in caps
    if wanted and isinstance(token, str | int) and not isinstance(token, bool):
        return token
    return None


def partial_result(token: str | int, seq: int, item: Any) -> bytes:
    """One stream item as ``notifications/tools/partial_result`` number ``seq`` (from 0)."""
    params: dict[str, Any] = {
        "partialResultToken": token,
        "seq": seq,
        "content": text_blocks(item),
    }
    if isinstance(item, dict):
        params["structuredContent"] = item
    return notification("notifications/tools/partial_result", params)


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
