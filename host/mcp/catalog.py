"""The host's tools as MCP sees them: tool entries, output schemas, results, pages.

MCP wants an object at the root of every output schema and of every
``structuredContent``; a tool returning anything else (a string, a number, a list,
a stream of items) is offered with its schema wrapped as ``{"result": <schema>}`` and
answers ``{"result": <value>}``.

The text blocks, which is what a model reads, hold the value itself as the official
SDK's server (MCPServer) writes it: a string as it is, a list as one block per item
(nested lists flattened, ``None`` items left out; more than :data:`MAX_TEXT_BLOCKS`
items are one block of JSON instead), anything else as JSON indented by two spaces; a
``None`` result has no block. A tool's failure is a result with ``isError``, a text
line, and the whole error (code, message, data) in ``_meta["mcphost/error"]``, where
no client checks it against the tool's output schema.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from mcphost.sdk.content import is_wire_content
from mcphost.sdk.content import to_mcp as content_to_mcp
from mcphost.sdk.errors import MCPHostError

from .jsonrpc import INVALID_PARAMS, RpcError

if TYPE_CHECKING:
    from ..host import ToolInfo

__all__ = [
    "ERROR_META",
    "MAX_TEXT_BLOCKS",
    "Catalog",
    "McpTool",
    "error_result",
    "text_blocks",
    "tool_result",
]

#: The ``_meta`` key of an error result that holds the error: code, message, data.
ERROR_META = "mcphost/error"

#: A list result gets one text block per item up to this many items; a longer one is a
#: single block of JSON, so that a big result (a worker's answer may be 16 MiB of small
#: numbers) does not become millions of objects in the host and on the wire.
MAX_TEXT_BLOCKS = 1000

_json = msgspec.json.Encoder()


def _is_object_schema(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "object" and not any(
        k in schema for k in ("anyOf", "oneOf", "allOf", "$ref")
    )


def _wrap(schema: dict[str, Any]) -> dict[str, Any]:
    """``{"result": schema}``; ``$defs`` move to the new root so ``#/$defs/..`` still resolves."""
    inner = dict(schema)
    defs = inner.pop("$defs", None)
    wrapped: dict[str, Any] = {
        "type": "object",
        "properties": {"result": inner},
        "required": ["result"],
    }
    if defs is not None:
        wrapped["$defs"] = defs
    return wrapped


class McpTool(msgspec.Struct, frozen=True):
    """One tool as listed to MCP clients, with how its results are shaped."""

    name: str
    plugin: str
    kind: str
    entry: dict[str, Any]
    #: The MCP output schema, None when the tool has none.
    output_schema: dict[str, Any] | None
    #: Whether structured results are wrapped as {"result": value}.
    wrapped: bool


def to_mcp_tool(info: ToolInfo) -> McpTool:
    out = info.output_schema
    if info.kind == "stream":
        out = {"type": "array", "items": out} if out is not None else {"type": "array"}
    wrapped = False
    schema: dict[str, Any] | None = None
    if out is not None:
        if _is_object_schema(out):
            schema = out
        else:
            schema, wrapped = _wrap(out), True
    entry: dict[str, Any] = {
        "name": info.name,
        "description": info.description or info.name,
        "inputSchema": info.input_schema or {"type": "object"},
    }
    if schema is not None:
        entry["outputSchema"] = schema
    entry["_meta"] = {
        "mcphost/plugin": info.plugin,
        "mcphost/version": info.version,
        "mcphost/kind": info.kind,
    }
    return McpTool(info.name, info.plugin, info.kind, entry, schema, wrapped)


def _text_block(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"type": "text", "text": value}
    pretty = msgspec.json.format(_json.encode(value), indent=2).decode()
    return {"type": "text", "text": pretty}


def _list_items(value: list[Any], limit: int) -> list[Any] | None:
    """The items of a list, nested lists flattened and None left out; None when there
    are more than ``limit``."""
    items: list[Any] = []
    stack = [iter(value)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            if item is not None:
                if len(items) == limit:
                    return None
                items.append(item)
        else:
            stack.pop()
    return items


def text_blocks(value: Any) -> list[dict[str, Any]]:
    """The text content of a result, block for block as the official SDK's server writes
    it, except that a list of more than :data:`MAX_TEXT_BLOCKS` items is one block."""
    if value is None:
        return []
    if isinstance(value, list):
        items = _list_items(value, MAX_TEXT_BLOCKS)
        if items is not None:
            return [_text_block(item) for item in items]
    return [_text_block(value)]


def tool_result(tool: McpTool | None, value: Any) -> dict[str, Any]:
    """A successful ``tools/call`` result: content, plus structuredContent when typed."""
    if is_wire_content(value):
        # Images, audio, resources (sdk/content.py): blocks as MCP writes them, bytes
        # in base64; a ToolResult's structured value beside them.
        blocks, structured, has_structured = content_to_mcp(value)
        out: dict[str, Any] = {"content": blocks}
        if tool is not None and tool.output_schema is not None and has_structured:
            out["structuredContent"] = {"result": structured} if tool.wrapped else structured
        return out
    result: dict[str, Any] = {"content": text_blocks(value)}
    if tool is not None and tool.output_schema is not None:
        result["structuredContent"] = {"result": value} if tool.wrapped else value
    return result


def error_result(error: MCPHostError) -> dict[str, Any]:
    """A tool's own failure: a result with isError, readable by the model that called it,
    with the whole error (code, message, data) for clients that branch on it."""
    return {
        "content": [{"type": "text", "text": f"error [{error.code}]: {error.message}"}],
        "isError": True,
        "_meta": {ERROR_META: error.to_dict()},
    }


class Catalog:
    """The tool list of one moment, paged by opaque cursors."""

    def __init__(self, tools: Sequence[ToolInfo], page_size: int) -> None:
        self.tools = [to_mcp_tool(t) for t in tools]
        self.by_name = {t.name: t for t in self.tools}
        self.page_size = max(1, page_size)

    def page(self, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        start = 0
        if cursor is not None:
            start = self._decode_cursor(cursor)
        end = start + self.page_size
        items = [t.entry for t in self.tools[start:end]]
        nxt = self._encode_cursor(end) if end < len(self.tools) else None
        return items, nxt

    @staticmethod
    def _encode_cursor(offset: int) -> str:
        return base64.urlsafe_b64encode(f"tools:{offset}".encode()).decode()

    @staticmethod
    def _decode_cursor(cursor: str) -> int:
        try:
            raw = base64.urlsafe_b64decode(cursor.encode()).decode()
            tag, _, num = raw.partition(":")
            offset = int(num)
            if tag != "tools" or offset < 0:
                raise ValueError(raw)
        except (ValueError, UnicodeError):
            raise RpcError(
                INVALID_PARAMS,
                f"tools/list: cursor {cursor!r} is not one this server gave out; "
                "list again without a cursor",
            ) from None
        return offset
