"""One MCP conversation: era, negotiated version, calls in flight, log level, listeners.

A session speaks one era of the spec. The handshake era (``initialize``, revisions up to
2025-11-25) keeps state: the version, the log level set with ``logging/setLevel``, a
stream for notifications. The stateless 2026-07-28 era carries everything in each
request's ``_meta``; change notifications flow only on ``subscriptions/listen`` streams
and log lines only to requests that opted in with a log level. On a stream transport
(stdio) the client's first request decides the era, as the spec's dual-era servers do.

Transports hand each request to :meth:`Session.handle_request` with a :class:`Notifier`
for the notifications that belong to it, and write back the bytes it returns. A call's
progress and log lines go down its own notifier and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from mcphost.sandbox.asking import current_asker
from mcphost.sdk.errors import MCPHostError, PluginNotFound, ToolNotFound

from .asks import ClientRequests, ParkedCall, declared, fallback, for_version
from .catalog import McpTool, error_result, tool_result
from .features import FEATURE_METHODS, SUBSCRIBE_METHODS, handle_feature
from .jsonrpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    UNSUPPORTED_PROTOCOL_VERSION,
    Message,
    RequestId,
    RpcError,
    error_response,
    notification,
    response,
)
from .notices import (
    PRIORITY_META_KEY,
    log_message,
    partial_result,
    partial_result_token,
    progress_key,
    progress_sender,
)
from .server import (
    HANDSHAKE_VERSIONS,
    LATEST_HANDSHAKE_VERSION,
    LOG_LEVELS,
    MODERN_VERSIONS,
    McpServer,
)

__all__ = ["Notifier", "Session", "has_envelope"]

log = logging.getLogger("mcphost.mcp")

PROTOCOL_VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
LOG_LEVEL_KEY = "io.modelcontextprotocol/logLevel"
SUBSCRIPTION_ID_KEY = "io.modelcontextprotocol/subscriptionId"


class Notifier(Protocol):
    """Where the notifications of one request go (stdio: the pipe; HTTP: its SSE stream).

    ``notify`` never waits: a notifier toward a slow client keeps only the newest of the
    notifications sent with the same ``key`` (a progress token) and drops others it has
    no room for, saying how many (see :mod:`mcphost.host.mcp.outbox`)."""

    def notify(self, data: bytes, key: Hashable | None = None) -> None: ...

    async def send(self, data: bytes) -> None:
        """Send a notification that must not be dropped (a partial result): wait while
        the client's outbox is full. Returns at once once the client is gone."""


def meta_priority(tool: str, meta: Any) -> int | None:
    """The priority a ``tools/call`` asks for in ``_meta["mcphost/priority"]`` (None:
    none); anything but a whole number from 0 to 100 is refused as invalid params."""
    if not isinstance(meta, dict) or PRIORITY_META_KEY not in meta:
        return None
    value = meta[PRIORITY_META_KEY]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise RpcError(
            INVALID_PARAMS,
            f"tools/call {tool}: _meta[{PRIORITY_META_KEY!r}] must be a whole number from 0 "
            f"(the highest priority) to 100, got {value!r}; leave it out for the tool's default",
            data={"tool": tool, "key": PRIORITY_META_KEY, "minimum": 0, "maximum": 100},
        )
    return value


def has_envelope(params: dict[str, Any] | None) -> bool:
    """Whether a request carries the 2026-07-28 per-request envelope."""
    if not params:
        return False
    meta = params.get("_meta")
    return isinstance(meta, dict) and PROTOCOL_VERSION_KEY in meta


class _Call:
    __slots__ = ("log_level", "notifier", "plugin", "task")

    def __init__(self, plugin: str, notifier: Notifier, log_level: int | None) -> None:
        self.plugin = plugin
        self.notifier = notifier
        self.log_level = log_level
        self.task = asyncio.current_task()


class _Listen:
    __slots__ = ("done", "notifier", "prompts", "resources", "rid", "tools", "uris")

    def __init__(
        self,
        rid: RequestId,
        notifier: Notifier,
        tools: bool,
        prompts: bool = False,
        resources: bool = False,
        uris: frozenset[str] = frozenset(),
    ) -> None:
        self.rid = rid
        self.notifier = notifier
        self.tools = tools
        self.prompts = prompts
        self.resources = resources
        self.uris = uris
        self.done = asyncio.Event()


class Session:
    """The state of one client; ``era`` is "legacy", "modern" or None until decided."""

    def __init__(
        self,
        server: McpServer,
        *,
        push: Callable[[bytes], None] | None = None,
        era: str | None = None,
    ) -> None:
        self.server = server
        #: Where session-wide notifications go (None: nowhere, e.g. no HTTP GET stream).
        self.push = push
        self.era = era
        self.version: str | None = None
        self.log_level = LOG_LEVELS.get(server.options.default_log_level, 1)
        self.calls: dict[RequestId, _Call] = {}
        self.listens: dict[RequestId, _Listen] = {}
        #: The ``Mcp-Session-Id`` of an HTTP session (for traces), None elsewhere.
        self.session_id: str | None = None
        #: URIs this handshake-era session subscribed to (``resources/subscribe``).
        self.resource_subscriptions: set[str] = set()
        #: The capabilities the client declared at initialize (handshake era).
        self.client_caps: dict[str, Any] = {}
        #: This session's requests to its client (tools' questions), by id.
        self.client_requests = ClientRequests()
        server.sessions.add(self)
        server.frontend.sessions_opened += 1

    def close(self) -> None:
        """End listen streams and forget the session; calls end with their transport."""
        for lst in self.listens.values():
            lst.done.set()
        self.server.sessions.discard(self)

    # -- requests ------------------------------------------------------------------
    async def handle_request(self, msg: Message, notifier: Notifier) -> bytes | None:
        """Answer one request; None when no answer is due. Cancellation propagates."""
        rid: RequestId = msg.id  # type: ignore[assignment]
        method: str = msg.method  # type: ignore[assignment]
        params = msg.params if isinstance(msg.params, dict) else {}
        stats = self.server.frontend.request(method)
        t0 = time.perf_counter()
        try:
            if self.era is None:
                self.era = "modern" if method != "initialize" and has_envelope(params) else "legacy"
            if self.era == "modern":
                result = await self._modern(rid, method, params, notifier)
            else:
                result = await self._legacy(rid, method, params, notifier)
        except RpcError as err:
            stats.end(t0, str(err.code))
            return error_response(rid, err)
        except asyncio.CancelledError:
            stats.end(t0, "cancelled")
            raise
        except Exception as exc:  # a bug must cost one request, never the server
            stats.end(t0, "-32603")
            log.exception("MCP request %s failed", method)
            return error_response(rid, RpcError(-32603, f"{method} failed inside mcphost: {exc}"))
        stats.end(t0, "ok")
        return response(rid, result)

    def handle_response(self, msg: Message) -> None:
        """A response from the client: the answer to a tool's question (else ignored)."""
        self.client_requests.answered(msg)

    def handle_notification(self, msg: Message) -> None:
        params = msg.params if isinstance(msg.params, dict) else {}
        if msg.method == "notifications/cancelled":
            rid = params.get("requestId")
            if isinstance(rid, (int, str)):
                self.cancel(rid)
        # Anything else needs no action: notifications/initialized (requests are served
        # once initialize is answered, as the MCP lifecycle allows; mcphost sends the
        # client no requests it would have to hold back), progress, roots/list_changed.

    def cancel(self, rid: RequestId) -> None:
        """Cancel request ``rid`` (its call is cancelled in the worker too)."""
        call = self.calls.get(rid)
        if call is not None and call.task is not None:
            call.task.cancel()
        lst = self.listens.get(rid)
        if lst is not None:
            lst.done.set()

    async def _legacy(
        self, rid: RequestId, method: str, params: dict[str, Any], notifier: Notifier
    ) -> Any:
        if method == "tools/call":
            self._need_initialize(method)
            return await self._call_tool(rid, params, notifier, None)
        if method == "initialize":
            requested = params.get("protocolVersion")
            if not isinstance(requested, str):
                raise RpcError(INVALID_PARAMS, "initialize needs params.protocolVersion (a string)")
            self.version = (
                requested if requested in HANDSHAKE_VERSIONS else (LATEST_HANDSHAKE_VERSION)
            )
            caps = params.get("capabilities")
            self.client_caps = caps if isinstance(caps, dict) else {}
            return self.server.initialize_result(self.version)
        if method == "ping":
            return {}
        if has_envelope(params):
            raise RpcError(
                INVALID_REQUEST,
                "this connection speaks the initialize handshake era; requests carrying the "
                "2026-07-28 envelope are not accepted on it (open a new connection)",
            )
        if method == "tools/list":
            self._need_initialize(method)
            return await self._list_tools(params, modern=False)
        if method in FEATURE_METHODS or method in SUBSCRIBE_METHODS:
            self._need_initialize(method)
            return await handle_feature(self, method, params)
        if method == "logging/setLevel":
            level = params.get("level")
            if level not in LOG_LEVELS:
                raise RpcError(
                    INVALID_PARAMS,
                    f"logging/setLevel: level {level!r} is not one of " + ", ".join(LOG_LEVELS),
                )
            self.log_level = LOG_LEVELS[level]
            return {}
        raise RpcError(
            METHOD_NOT_FOUND,
            f"method {method!r} is not served by mcphost "
            "(it serves initialize, ping, tools/list, tools/call, logging/setLevel, "
            "resources/list, resources/templates/list, resources/read, resources/subscribe, "
            "resources/unsubscribe, prompts/list, prompts/get, completion/complete)",
            data=method,
        )

    def _need_initialize(self, method: str) -> None:
        if self.version is None:
            raise RpcError(INVALID_REQUEST, f"{method} before initialize: send initialize first")

    async def _modern(
        self, rid: RequestId, method: str, params: dict[str, Any], notifier: Notifier
    ) -> Any:
        if method == "initialize":
            requested = params.get("protocolVersion")
            raise RpcError(
                UNSUPPORTED_PROTOCOL_VERSION,
                "this connection speaks the stateless 2026-07-28 protocol; the initialize "
                "handshake is not accepted on it",
                data={
                    "supported": list(MODERN_VERSIONS),
                    "requested": requested if isinstance(requested, str) else "",
                },
            )
        meta = params.get("_meta")
        if (
            not isinstance(meta, dict)
            or PROTOCOL_VERSION_KEY not in meta
            or (CLIENT_CAPABILITIES_KEY not in meta)
        ):
            raise RpcError(
                INVALID_PARAMS,
                f"params._meta must carry {PROTOCOL_VERSION_KEY!r} and "
                f"{CLIENT_CAPABILITIES_KEY!r} on every request of this connection",
            )
        version = meta[PROTOCOL_VERSION_KEY]
        if not isinstance(version, str):
            raise RpcError(INVALID_PARAMS, "the protocol version in _meta must be a string")
        if version not in MODERN_VERSIONS:
            raise RpcError(
                UNSUPPORTED_PROTOCOL_VERSION,
                f"protocol version {version!r} is not supported; use one of "
                + ", ".join(MODERN_VERSIONS),
                data={"supported": list(MODERN_VERSIONS), "requested": version},
            )
        self.version = version
        result: dict[str, Any]
        if method == "tools/call":
            level = meta.get(LOG_LEVEL_KEY)
            result = await self._modern_call(
                rid,
                params,
                notifier,
                LOG_LEVELS.get(level, None) if isinstance(level, str) else None,
                meta.get(CLIENT_CAPABILITIES_KEY),
            )
            if "resultType" in result:
                return result  # input_required: the client answers and comes back
        elif method == "tools/list":
            result = await self._list_tools(params, modern=True)
        elif method == "server/discover":
            return self.server.discover_result()
        elif method == "subscriptions/listen":
            result = await self._listen(rid, params, notifier)
        elif method in FEATURE_METHODS:
            result = await handle_feature(self, method, params, modern=True)
        else:
            raise RpcError(
                METHOD_NOT_FOUND,
                f"method {method!r} is not served at {version} "
                "(mcphost serves server/discover, tools/list, tools/call, "
                "subscriptions/listen, resources/list, resources/templates/list, "
                "resources/read, prompts/list, prompts/get, completion/complete)",
                data=method,
            )
        result["resultType"] = "complete"
        return result

    # -- tools ---------------------------------------------------------------------
    async def _list_tools(self, params: dict[str, Any], *, modern: bool) -> dict[str, Any]:
        cursor = params.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise RpcError(INVALID_PARAMS, "tools/list: cursor must be a string")
        catalog = await self.server.catalog()
        tools, nxt = catalog.page(cursor)
        result: dict[str, Any] = {"tools": tools}
        if nxt is not None:
            result["nextCursor"] = nxt
        if modern:
            result["ttlMs"] = self.server.options.tools_ttl_ms
            result["cacheScope"] = "private"
        return result

    async def _modern_call(
        self,
        rid: RequestId,
        params: dict[str, Any],
        notifier: Notifier,
        log_level: int | None,
        caps: Any,
    ) -> dict[str, Any]:
        """A 2026-07-28 ``tools/call``: its questions to the client go back as
        ``input_required`` results, and the retry carrying ``requestState`` resumes the
        call still running (see :mod:`.asks`)."""
        parked_calls: dict[str, ParkedCall] = self.server.parked
        state = params.get("requestState")
        if state is not None:
            parked = parked_calls.get(state) if isinstance(state, str) else None
            if parked is None:
                raise RpcError(
                    INVALID_PARAMS,
                    "tools/call: requestState names no call waiting for answers (it ended, "
                    "or its deadline passed); call the tool again without it",
                )
            parked.take_responses(params.get("inputResponses"))
            return await parked.next_answer()
        parked = ParkedCall(parked_calls, self.server.call_timeout)
        host_asker = self.server.host.asker

        async def ask(kind: str, ask_params: dict[str, Any]) -> Any:
            if not declared(caps, kind):
                return await fallback(host_asker, kind)(kind, ask_params)
            return await parked.ask(kind, ask_params)

        token = current_asker.set(ask)
        try:
            parked.start(
                asyncio.get_running_loop().create_task(
                    self._call_tool(rid, params, notifier, log_level)
                )
            )
        finally:
            current_asker.reset(token)
        return await parked.next_answer()

    def _asker(self, notifier: Notifier) -> Any:
        """The asker of a handshake-era call: requests to the client down the call's
        own stream, or the host's handler for a capability the client lacks."""
        host_asker = self.server.host.asker

        async def ask(kind: str, params: dict[str, Any]) -> Any:
            if not declared(self.client_caps, kind):
                return await fallback(host_asker, kind)(kind, params)
            params = for_version(kind, params, self.version)
            return await self.client_requests.ask(kind, params, notifier.send, notifier.notify)

        return ask

    async def _call_tool(
        self, rid: RequestId, params: dict[str, Any], notifier: Notifier, log_level: int | None
    ) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str):
            raise RpcError(INVALID_PARAMS, "tools/call needs params.name, the tool's name")
        args = params.get("arguments")
        if args is None:
            args = {}
        elif not isinstance(args, dict):
            raise RpcError(INVALID_PARAMS, f"tools/call {name}: arguments must be an object")
        catalog = self.server.catalog_now() or await self.server.catalog()
        tool = catalog.by_name.get(name)
        if tool is None:
            raise RpcError(
                INVALID_PARAMS,
                f"unknown tool {name!r}: tools/list shows the tools "
                "this server offers, by the names to call them by",
                data={"tool": name},
            )
        meta = params.get("_meta")
        priority = meta_priority(name, meta)
        if rid in self.calls:
            raise RpcError(INVALID_REQUEST, f"request id {rid!r} is already in use by a call")
        call = self.calls[rid] = _Call(tool.plugin, notifier, log_level)

        def on_log(level: str, message: str) -> None:
            self._call_log(call, level, message)

        tracing = self.server.host.tracing
        token = current_asker.set(self._asker(notifier)) if self.era == "legacy" else None
        try:
            if tracing is not None:
                from mcphost.host.observe.tracing import mcp_request

                with mcp_request(
                    meta,
                    method="tools/call",
                    request_id=rid,
                    session_id=self.session_id,
                    protocol_version=self.version,
                ):
                    value = await self._run_tool(tool, args, notifier, meta, on_log, priority)
            else:
                value = await self._run_tool(tool, args, notifier, meta, on_log, priority)
        except (ToolNotFound, PluginNotFound) as exc:
            raise RpcError(INVALID_PARAMS, exc.message, data={"tool": name}) from None
        except MCPHostError as exc:
            return error_result(exc)
        finally:
            self.calls.pop(rid, None)
            if token is not None:
                current_asker.reset(token)
        return tool_result(tool, value)

    async def _run_tool(
        self,
        tool: McpTool,
        args: dict[str, Any],
        notifier: Notifier,
        meta: Any,
        on_log: Callable[[str, str], None],
        priority: int | None,
    ) -> Any:
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        if tool.kind == "stream":
            return await self._stream(tool, args, notifier, meta, on_log, priority)
        on_progress = None if token is None else progress_sender(notifier, token)
        return await self.server.host.call(
            tool.name, args, on_progress=on_progress, on_log=on_log, priority=priority
        )

    async def _stream(
        self,
        tool: McpTool,
        args: dict[str, Any],
        notifier: Notifier,
        meta: Any,
        on_log: Callable[[str, str], None],
        priority: int | None,
    ) -> list[Any]:
        """Collect a streaming tool's items; each one is a progress notification and,
        for a client that opted in, a partial result (docs/streaming.md)."""
        items: list[Any] = []
        total: list[float | None] = [None]

        def on_progress(progress: float, t: float | None, message: str | None) -> None:
            total[0] = t

        if not isinstance(meta, dict):
            meta = {}
        token = meta.get("progressToken")
        partial = partial_result_token(meta)
        key = progress_key(token)
        stream = self.server.host.stream(
            tool.name,
            args,
            on_progress=on_progress,
            on_log=on_log,
            priority=priority,
        )
        async for item in stream:
            seq = len(items)
            items.append(item)
            if token is not None:
                params: dict[str, Any] = {"progressToken": token, "progress": len(items)}
                if total[0] is not None:
                    params["total"] = total[0]
                notifier.notify(notification("notifications/progress", params), key)
            if partial is not None:
                # Waits while the client's outbox is full: the stream stops taking
                # items, and its watermarks pause the producer.
                await notifier.send(partial_result(partial, seq, item))
        return items

    async def _listen(
        self, rid: RequestId, params: dict[str, Any], notifier: Notifier
    ) -> dict[str, Any]:
        wanted = params.get("notifications")
        if not isinstance(wanted, dict):
            raise RpcError(
                INVALID_PARAMS,
                'subscriptions/listen needs params.notifications, e.g. {"toolsListChanged": true}',
            )
        tools = wanted.get("toolsListChanged") is True
        prompts = wanted.get("promptsListChanged") is True
        resources = wanted.get("resourcesListChanged") is True
        raw_uris = wanted.get("resourceSubscriptions")
        uris = (
            frozenset(u for u in raw_uris if isinstance(u, str))
            if isinstance(raw_uris, list)
            else frozenset()
        )
        meta = {SUBSCRIPTION_ID_KEY: rid}
        honored: dict[str, Any] = {"toolsListChanged": True} if tools else {}
        if prompts:
            honored["promptsListChanged"] = True
        if resources:
            honored["resourcesListChanged"] = True
        if uris:
            honored["resourceSubscriptions"] = sorted(uris)
        lst = _Listen(rid, notifier, tools, prompts, resources, uris)
        self.listens[rid] = lst
        try:
            notifier.notify(
                notification(
                    "notifications/subscriptions/acknowledged",
                    {"notifications": honored, "_meta": meta},
                )
            )
            await lst.done.wait()
        finally:
            self.listens.pop(rid, None)
        return {"_meta": meta}

    # -- events from the host ------------------------------------------------------
    def tools_changed(self) -> None:
        if self.era == "modern":
            for lst in self.listens.values():
                if lst.tools:
                    lst.notifier.notify(
                        notification(
                            "notifications/tools/list_changed",
                            {"_meta": {SUBSCRIPTION_ID_KEY: lst.rid}},
                        )
                    )
        elif self.version is not None and self.push is not None:
            self.push(notification("notifications/tools/list_changed", {}))

    def features_changed(self) -> None:
        """A plugin was installed, swapped or removed: its resources and prompts may
        have changed (as for tools, clients are told and list again)."""
        for method, flag in (
            ("notifications/resources/list_changed", "resources"),
            ("notifications/prompts/list_changed", "prompts"),
        ):
            if self.era == "modern":
                for lst in self.listens.values():
                    if getattr(lst, flag):
                        lst.notifier.notify(
                            notification(method, {"_meta": {SUBSCRIPTION_ID_KEY: lst.rid}})
                        )
            elif self.version is not None and self.push is not None:
                self.push(notification(method, {}))

    def resource_updated(self, uri: str) -> None:
        """Resource ``uri`` changed: to the listens and subscriptions that asked for it."""
        method = "notifications/resources/updated"
        if self.era == "modern":
            for lst in self.listens.values():
                if uri in lst.uris:
                    lst.notifier.notify(
                        notification(method, {"uri": uri, "_meta": {SUBSCRIPTION_ID_KEY: lst.rid}})
                    )
        elif uri in self.resource_subscriptions and self.push is not None:
            self.push(notification(method, {"uri": uri}))

    def plugin_log(self, plugin: str, level: str, message: str) -> None:
        """A plugin's line from outside any call (forwarded only when the operator asked):
        to a handshake-era session's own stream, at or above its level. A stateless
        session has no stream of its own, so it gets only its calls' lines."""
        if self.era == "modern" or self.version is None or self.push is None:
            return
        if LOG_LEVELS[level] >= self.log_level:
            self.push(log_message(plugin, level, message))

    def _call_log(self, call: _Call, level: str, message: str) -> None:
        """One of ``call``'s own log lines: down its notifier, if the level is wanted."""
        rank = LOG_LEVELS.get(level, LOG_LEVELS["info"])
        if self.era == "modern":
            wanted = call.log_level
        else:
            wanted = None if self.version is None else self.log_level
        if wanted is not None and rank >= wanted:
            call.notifier.notify(log_message(call.plugin, level, message))
