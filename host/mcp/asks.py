"""A tool's questions to the MCP client that called it: sampling and elicitation.

A worker's ``Ask`` reaches the asker the session set for the call
(:data:`mcphost.sandbox.asking.current_asker`); the asker carries it to the client as
its era of MCP says:

* Handshake era (up to 2025-11-25): a JSON-RPC request from server to client
  (``sampling/createMessage``, ``elicitation/create``) sent on the call's own stream (the
  stdio pipe, or the SSE stream answering the ``tools/call`` POST); the client's
  response comes back as a message of its own (a line on stdin, a POST), which
  :meth:`ClientRequests.answered` matches by id. Cancelling the call sends
  ``notifications/cancelled`` for the questions in flight.
* Stateless 2026-07-28: the server cannot send requests. ``tools/call`` answers
  ``resultType: "input_required"`` with the questions (``inputRequests``) and a
  ``requestState``; the client retries ``tools/call`` with ``inputResponses`` and that
  state, and gets the result or the next questions. The call keeps running in its
  worker meanwhile (:class:`ParkedCall`); a state nobody comes back for expires with
  the call's deadline.

A client that did not declare the capability (``sampling``, ``elicitation``) gets the
host's own handler if the embedding app gave one, else the tool gets ``ask_unsupported``.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from mcphost.sandbox.asking import KINDS, no_handler
from mcphost.sdk.errors import AskFailed

from .jsonrpc import Message, RequestId, notification

if TYPE_CHECKING:
    from mcphost.sandbox.asking import HostAsker

__all__ = ["CAPABILITY", "ClientRequests", "ParkedCall", "declared", "fallback"]

_json = msgspec.json.Encoder()

#: The client capability each kind of ask needs.
CAPABILITY = {"sample": "sampling", "elicit": "elicitation"}
#: The first handshake-era revision whose elicitation requests carry ``mode``.
_MODE_SINCE = "2025-11-25"


def declared(caps: Any, kind: str) -> bool:
    """Whether client capabilities ``caps`` declare what an ask of ``kind`` needs."""
    return isinstance(caps, dict) and isinstance(caps.get(CAPABILITY[kind]), dict)


def fallback(host_asker: HostAsker | None, kind: str) -> HostAsker:
    """The host's handler for a client without the capability, or the error saying so."""
    if host_asker is not None and host_asker.can(kind):
        return host_asker
    raise no_handler(kind, f"the MCP client did not declare the '{CAPABILITY[kind]}' capability")


def for_version(kind: str, params: dict[str, Any], version: str | None) -> dict[str, Any]:
    """The params as revision ``version`` writes them (``mode`` only from 2025-11-25)."""
    if kind == "elicit" and "mode" in params and (version or "") < _MODE_SINCE:
        params = {k: v for k, v in params.items() if k != "mode"}
    return params


def _client_error(kind: str, error: Any) -> AskFailed:
    if isinstance(error, dict):
        text = f"{error.get('message', 'no message')} (code {error.get('code')})"
    else:
        text = repr(error)
    return AskFailed(f"the client refused the {KINDS[kind]} request: {text}", data={"kind": kind})


class ClientRequests:
    """The server->client requests of one handshake-era session, matched by id."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._waiting: dict[RequestId, tuple[str, asyncio.Future[Any]]] = {}

    async def ask(
        self,
        kind: str,
        params: dict[str, Any],
        send: Callable[[bytes], Awaitable[None]],
        notify: Callable[[bytes], None],
    ) -> Any:
        """Send the request down the call's stream and wait for the client's answer."""
        rid = f"mcphost-ask-{next(self._ids)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = (kind, future)
        try:
            await send(
                _json.encode({"jsonrpc": "2.0", "id": rid, "method": KINDS[kind], "params": params})
            )
            return await future
        except asyncio.CancelledError:
            if self._waiting.get(rid) is not None:
                notify(
                    notification(
                        "notifications/cancelled",
                        {"requestId": rid, "reason": "the tool call was cancelled"},
                    )
                )
            raise
        finally:
            self._waiting.pop(rid, None)

    def answered(self, msg: Message) -> bool:
        """A response from the client: settle the request it answers (False: none)."""
        rid = msg.id
        if not isinstance(rid, (int, str)):
            return False
        entry = self._waiting.pop(rid, None)
        if entry is None:
            return False
        kind, future = entry
        if future.done():
            return True
        if msg.error is not msgspec.UNSET and msg.error is not None:
            future.set_exception(_client_error(kind, msg.error))
        else:
            future.set_result(None if msg.result is msgspec.UNSET else msg.result)
        return True


class ParkedCall:
    """A 2026-07-28 ``tools/call`` that asked its client something: the call runs on
    while the client answers, and each retry of the request picks it up."""

    def __init__(self, parked: dict[str, ParkedCall], ttl: float) -> None:
        self.state = secrets.token_urlsafe(18)
        self._parked = parked
        self._ttl = ttl
        self._keys = itertools.count(1)
        #: Questions not yet sent to the client, and those sent and not answered.
        self.new: dict[str, tuple[str, dict[str, Any]]] = {}
        self.open: dict[str, tuple[str, asyncio.Future[Any]]] = {}
        self.task: asyncio.Task[dict[str, Any]] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        #: Resolved when a question comes or the call ends (one future, no task, so a
        #: call that asks nothing costs little more than its own task).
        self._waiter: asyncio.Future[None] | None = None

    def start(self, task: asyncio.Task[dict[str, Any]]) -> None:
        self.task = task
        task.add_done_callback(lambda _t: self._wake())

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def ask(self, kind: str, params: dict[str, Any]) -> Any:
        """The asker of the call: queue the question for the next answer to the client."""
        key = f"{kind}-{next(self._keys)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.new[key] = (KINDS[kind], params)
        self.open[key] = (kind, future)
        self._wake()
        try:
            return await future
        finally:
            self.open.pop(key, None)
            self.new.pop(key, None)

    def take_responses(self, responses: Any) -> None:
        """The client's ``inputResponses``: settle the questions they answer."""
        if not isinstance(responses, dict):
            return
        for key, value in responses.items():
            entry = self.open.get(key)
            if entry is None or entry[1].done():
                continue
            _kind, future = entry
            # Each response is the result itself (CreateMessageResult, ElicitResult).
            future.set_result(value)

    async def next_answer(self) -> dict[str, Any]:
        """The call's result, or ``input_required`` with the questions not yet sent."""
        assert self.task is not None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        while not self.new and not self.task.done():
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            except asyncio.CancelledError:
                # The client gave up on the request (closed its stream): end the call.
                self.task.cancel()
                self._parked.pop(self.state, None)
                raise
            finally:
                self._waiter = None
        if self.task.done():
            self._parked.pop(self.state, None)
            return self.task.result()
        requests = {key: {"method": m, "params": p} for key, (m, p) in self.new.items()}
        self.new.clear()
        self._parked[self.state] = self
        self._expiry = asyncio.get_running_loop().call_later(self._ttl, self.expire)
        return {
            "resultType": "input_required",
            "inputRequests": requests,
            "requestState": self.state,
        }

    def expire(self) -> None:
        """Nobody came back for the answers: end the call."""
        self._parked.pop(self.state, None)
        if self.task is not None:
            self.task.cancel()
