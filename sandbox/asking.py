"""Who answers a tool's questions to its client (sampling, elicitation), host side.

A worker's :class:`~mcphost.sandbox.protocol.Ask` is answered by the *asker* of the
call it belongs to: the function in :data:`current_asker` when the call was made (the
MCP front end sets one per ``tools/call``, which sends the question to the client that
made the call; :class:`~mcphost.host.Host` sets its own handlers for calls with no
client). A context variable carries it, so it reaches the worker through every layer a
call passes (tracing, pools, flow control) without each of them passing it on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from mcphost.sdk.errors import AskUnsupported

__all__ = ["KINDS", "AskHandler", "Asker", "HostAsker", "current_asker", "no_handler"]

#: An ask's kind and the MCP method that carries it to a client.
KINDS = {"sample": "sampling/createMessage", "elicit": "elicitation/create"}

#: An embedding app's handler for one kind: the MCP request's params, to its result.
AskHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
#: What answers a call's asks: kind ("sample" or "elicit"), params, to the result.
Asker = Callable[[str, dict[str, Any]], Awaitable[Any]]

#: The asker of the calls made in this context; None: nobody (the ask gets an error).
current_asker: ContextVar[Asker | None] = ContextVar("mcphost_asker", default=None)


def no_handler(kind: str, why: str) -> AskUnsupported:
    """The error of an ask nobody can answer, saying how to make one."""
    what = "sample a model" if kind == "sample" else "ask the user (elicitation)"
    option = "sampling_handler" if kind == "sample" else "elicitation_handler"
    return AskUnsupported(
        f"the tool asked its client to {what}, but {why}; use an MCP client that "
        f"declares the capability, or give the host a handler (Host({option}=...))",
        data={"kind": kind},
    )


class HostAsker:
    """The asker made of an embedding app's handlers (``Host(sampling_handler=...,
    elicitation_handler=...)``)."""

    def __init__(self, sampling: AskHandler | None, elicitation: AskHandler | None) -> None:
        self.handlers = {"sample": sampling, "elicit": elicitation}

    def can(self, kind: str) -> bool:
        return self.handlers.get(kind) is not None

    async def __call__(self, kind: str, params: dict[str, Any]) -> Any:
        handler = self.handlers.get(kind)
        if handler is None:
            raise no_handler(kind, f"the host has no {kind} handler")
        return await handler(params)
