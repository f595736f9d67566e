"""Writing to one HTTP client over ASGI: plain answers, a request's answer that turns
into SSE, and a session's GET stream.

Every stream is written by one coroutine from an :class:`~.outbox.Outbox`: while the
client does not read, ``send`` waits (uvicorn's transport flow control), and meanwhile
notifications are coalesced by progress token or dropped and counted, so nothing waiting
for a client grows without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable, MutableMapping
from typing import Any

from .jsonrpc import notification
from .outbox import Outbox

__all__ = [
    "Headers",
    "Receive",
    "Send",
    "answer_request",
    "send_json",
    "send_plain",
    "stream_session",
]

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

_SSE_HEADERS: Headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def dropped_notice(n: int) -> bytes:
    """What takes the place of notifications dropped for a client that did not read."""
    return notification(
        "notifications/message",
        {
            "level": "warning",
            "logger": "mcphost",
            "data": f"{n} log lines or notifications dropped: this client did not read "
            "them in time",
        },
    )


def new_outbox(limit: int) -> Outbox:
    return Outbox(limit, dropped_notice=dropped_notice)


def _event(data: bytes) -> bytes:
    return b"event: message\ndata: " + data + b"\n\n"


async def send_plain(send: Send, status: int, text: str, headers: Headers | None = None) -> None:
    body = (text + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, data: bytes, headers: Headers | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class Notifier:
    """Where one request's notifications go: its outbox (see ``session.Notifier``)."""

    __slots__ = ("outbox",)

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def notify(self, data: bytes, key: Hashable | None = None) -> None:
        self.outbox.notify(data, key)

    async def send(self, data: bytes) -> None:
        await self.outbox.put(data)


async def _disconnected(receive: Receive) -> None:
    """Return once the client has gone (its request body is already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def answer_request(
    receive: Receive,
    send: Send,
    handler: asyncio.Future[bytes | None],
    outbox: Outbox,
    *,
    headers: Headers,
    cancel_when_gone: bool,
    finish: Callable[[bytes], tuple[bytes, int]],
) -> None:
    """Write one request's answer: JSON (with the status ``finish`` gives it), or SSE
    from the first notification in ``outbox`` on. A client that goes away cancels the
    handler when ``cancel_when_gone`` (2026-07-28: closing the stream cancels the call)."""
    gone = asyncio.ensure_future(_disconnected(receive))
    sse = False
    try:
        while not handler.done():
            getter = asyncio.ensure_future(outbox.get())
            waiting: set[asyncio.Future[Any]] = {handler, gone, getter}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await getter
            elif (data := getter.result()) is not None:
                if not sse:
                    sse = True
                    start = {"type": "http.response.start", "status": 200}
                    await send({**start, "headers": [*_SSE_HEADERS, *headers]})
                await send({"type": "http.response.body", "body": _event(data), "more_body": True})
                continue
            if gone.done() and not handler.done():
                outbox.close()
                if cancel_when_gone:
                    handler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await handler
                return
    finally:
        outbox.close()
        gone.cancel()
        if not handler.done():
            handler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
    out = None if handler.cancelled() else handler.result()
    if sse:
        while (data := outbox.get_nowait()) is not None:
            await send({"type": "http.response.body", "body": _event(data), "more_body": True})
        last = _event(finish(out)[0]) if out is not None else b""
        await send({"type": "http.response.body", "body": last})
    elif out is None:
        start = {"type": "http.response.start", "status": 202}
        await send({**start, "headers": [(b"content-length", b"0"), *headers]})
        await send({"type": "http.response.body", "body": b""})
    else:
        body, status = finish(out)
        await send_json(send, status, body, headers)


async def stream_session(receive: Receive, send: Send, outbox: Outbox) -> None:
    """A session's GET stream: every frame of ``outbox`` as an SSE event until the client
    goes or the outbox is closed (the session ended: DELETE, expiry, shutdown)."""
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        while True:
            getter = asyncio.ensure_future(outbox.get())
            await asyncio.wait({getter, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                return
            data = getter.result()
            if data is None:
                await send({"type": "http.response.body", "body": b""})
                return
            await send({"type": "http.response.body", "body": _event(data), "more_body": True})
    finally:
        gone.cancel()
        outbox.close()
