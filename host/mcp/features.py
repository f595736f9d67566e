"""MCP methods for plugins' resources, prompts and completions (host/features.py does
the routing): ``resources/list``, ``resources/templates/list``, ``resources/read``,
``resources/subscribe`` and ``unsubscribe`` (handshake era; the 2026-07-28 era
subscribes on ``subscriptions/listen``), ``prompts/list``, ``prompts/get`` and
``completion/complete``. A resource, prompt or completion that fails is a JSON-RPC
error (these methods have no ``isError`` result); the error's code and data are in
``data``. The three lists come in pages of the server's page size (:mod:`.pages`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mcphost.sdk.errors import (
    InvalidArguments,
    MCPHostError,
    PluginNotFound,
    ResourceNotFound,
    ToolNotFound,
)

from .jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, RpcError
from .pages import cursor_param, decode_cursor, page_by_key

if TYPE_CHECKING:
    from .session import Session

__all__ = ["FEATURE_METHODS", "PLUGIN_FEATURE_METHODS", "SUBSCRIBE_METHODS", "handle_feature"]

#: Served in both eras.
FEATURE_METHODS = frozenset(
    {
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "prompts/list",
        "prompts/get",
        "completion/complete",
    }
)
#: Served in the handshake era only.
SUBSCRIBE_METHODS = frozenset({"resources/subscribe", "resources/unsubscribe"})
#: All of them (an HTTP token limited to some tools may use none).
PLUGIN_FEATURE_METHODS = FEATURE_METHODS | SUBSCRIBE_METHODS


def _uri(method: str, params: dict[str, Any]) -> str:
    uri = params.get("uri")
    if not isinstance(uri, str) or not uri:
        raise RpcError(INVALID_PARAMS, f"{method} needs params.uri, the resource's URI (a string)")
    return uri


#: Results the 2026-07-28 era lets clients cache (they carry ``ttlMs``, ``cacheScope``).
_CACHEABLE = frozenset(
    {"resources/list", "resources/templates/list", "resources/read", "prompts/list"}
)


#: The paged lists: method -> (the result's field, the cursor's tag, the sort key).
_LISTS: dict[str, tuple[str, str, str]] = {
    "resources/list": ("resources", "resources", "uri"),
    "resources/templates/list": ("resourceTemplates", "templates", "uriTemplate"),
    "prompts/list": ("prompts", "prompts", "name"),
}


async def _list_page(session: Session, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """One page of a list (a bad cursor refused before any worker starts for it)."""
    field, tag, key = _LISTS[method]
    cursor = cursor_param(method, params)
    after = None if cursor is None else decode_cursor(method, tag, cursor)
    host = await session.server.ready()
    if method == "resources/list":
        items = await host.list_resources()
    elif method == "resources/templates/list":
        items = await host.list_resource_templates()
    else:
        items = await host.list_prompts()
    page, nxt = page_by_key(
        tag, items, lambda e: str(e[key]), after, session.server.options.page_size
    )
    result: dict[str, Any] = {field: page}
    if nxt is not None:
        result["nextCursor"] = nxt
    return result


async def handle_feature(
    session: Session, method: str, params: dict[str, Any], *, modern: bool = False
) -> dict[str, Any]:
    """Answer one of :data:`FEATURE_METHODS` or :data:`SUBSCRIBE_METHODS`."""
    result = await _answer(session, method, params)
    if modern and method in _CACHEABLE:
        # Lists change as tools do (installs, swaps); a resource's content at any time.
        reading = method == "resources/read"
        result["ttlMs"] = 0 if reading else session.server.options.tools_ttl_ms
        result["cacheScope"] = "private"
    return result


async def _answer(session: Session, method: str, params: dict[str, Any]) -> dict[str, Any]:
    if method == "resources/subscribe":
        session.resource_subscriptions.add(_uri(method, params))
        return {}
    if method == "resources/unsubscribe":
        session.resource_subscriptions.discard(_uri(method, params))
        return {}
    if method in _LISTS:
        return await _list_page(session, method, params)
    host = await session.server.ready()
    try:
        if method == "resources/read":
            return await host.read_resource(_uri(method, params))
        if method == "prompts/get":
            name = params.get("name")
            if not isinstance(name, str):
                raise RpcError(INVALID_PARAMS, "prompts/get needs params.name, the prompt's name")
            return await host.get_prompt(name, params.get("arguments"))
        # completion/complete
        ref, argument = params.get("ref"), params.get("argument")
        if not isinstance(ref, dict) or not isinstance(argument, dict):
            raise RpcError(
                INVALID_PARAMS,
                "completion/complete needs params.ref ({type, name} or {type, uri}) and "
                "params.argument ({name, value})",
            )
        context = params.get("context")
        return await host.complete(ref, argument, context if isinstance(context, dict) else None)
    except (ResourceNotFound, ToolNotFound, PluginNotFound, InvalidArguments) as exc:
        raise RpcError(INVALID_PARAMS, exc.message, data=exc.to_dict()) from None
    except MCPHostError as exc:
        raise RpcError(INTERNAL_ERROR, f"{method}: {exc.message}", data=exc.to_dict()) from None
