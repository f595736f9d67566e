"""Rich content a tool may return: text, images, audio, embedded resources, links.

A tool returns one block, a list of blocks, or a :class:`ToolResult` (blocks together
with a structured value, which a client checks against the tool's output schema)::

    @plugin.tool
    def chart(n: int) -> list[Block]:
        return [Text(f"{n} points"), Image(render(n), "image/png")]

Bytes stay bytes between the worker and the host (the channel carries them as they
are); the MCP front end turns them into base64 as MCP requires. A result crosses the
channel in one frame, so its size is bounded by the frame limit (16 MiB unless the
operator set another); a bigger one fails the call with ``protocol_error`` saying so.

On the channel a block is a dict with the key :data:`MARK` naming its kind, so plain
data a tool returns is never mistaken for content; :func:`from_wire` turns such dicts
back into these classes (``Host.call`` returns the dicts).
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec

__all__ = [
    "MARK",
    "Audio",
    "BlobResource",
    "Block",
    "Image",
    "ResourceLink",
    "Text",
    "TextResource",
    "ToolResult",
    "from_wire",
    "is_content",
    "is_wire_content",
    "to_mcp",
    "to_wire",
]

#: The key marking a dict on the channel as a content block (its value: the kind).
MARK = "$content"

T = TypeVar("T")


def _check_bytes(kind: str, data: Any) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"{kind}.data must be bytes (the raw {kind.lower()}, not base64 text), "
            f"got {type(data).__name__}"
        )


def _check_mime(kind: str, mime_type: Any) -> None:
    if not isinstance(mime_type, str) or "/" not in mime_type:
        raise TypeError(
            f"{kind}.mime_type must be a MIME type such as 'image/png', got {mime_type!r}"
        )


class Text(msgspec.Struct, frozen=True):
    """A block of text."""

    text: str


class Image(msgspec.Struct, frozen=True):
    """An image: its bytes and MIME type (``image/png``, ``image/jpeg``, ...)."""

    data: bytes
    mime_type: str

    def __post_init__(self) -> None:
        _check_bytes("Image", self.data)
        _check_mime("Image", self.mime_type)

    @classmethod
    def from_file(cls, path: str | Path, mime_type: str | None = None) -> Image:
        """The image in ``path``; the MIME type is guessed from its name when not given."""
        return cls(Path(path).read_bytes(), mime_type or _guess(path, "image"))


class Audio(msgspec.Struct, frozen=True):
    """A sound: its bytes and MIME type (``audio/wav``, ``audio/mpeg``, ...)."""

    data: bytes
    mime_type: str

    def __post_init__(self) -> None:
        _check_bytes("Audio", self.data)
        _check_mime("Audio", self.mime_type)

    @classmethod
    def from_file(cls, path: str | Path, mime_type: str | None = None) -> Audio:
        """The sound in ``path``; the MIME type is guessed from its name when not given."""
        return cls(Path(path).read_bytes(), mime_type or _guess(path, "audio"))


class TextResource(msgspec.Struct, frozen=True):
    """A resource embedded in the result: its URI and its text."""

    uri: str
    text: str
    mime_type: str | None = None


class BlobResource(msgspec.Struct, frozen=True):
    """A resource embedded in the result: its URI and its bytes."""

    uri: str
    data: bytes
    mime_type: str | None = None

    def __post_init__(self) -> None:
        _check_bytes("BlobResource", self.data)


class ResourceLink(msgspec.Struct, frozen=True):
    """A link to a resource the client may read (not its content)."""

    uri: str
    name: str
    title: str | None = None
    description: str | None = None
    mime_type: str | None = None
    size: int | None = None


Block = Text | Image | Audio | TextResource | BlobResource | ResourceLink
_BLOCKS = (Text, Image, Audio, TextResource, BlobResource, ResourceLink)


class ToolResult(msgspec.Struct, Generic[T], frozen=True):
    """Content blocks together with a structured value.

    Annotate the tool ``-> ToolResult[Model]``: ``Model`` is its output schema, and
    ``structured`` (a ``Model``) the result's ``structuredContent``; the blocks are what
    a model reads. Without a structured value, annotate ``-> ToolResult``.
    """

    content: list[Block]
    structured: T | None = None


def _guess(path: str | Path, major: str) -> str:
    guessed, _ = mimetypes.guess_type(str(path))
    if guessed is None or not guessed.startswith(major + "/"):
        raise ValueError(f"cannot tell the {major} type of {str(path)!r}; pass mime_type=")
    return guessed


def is_content(value: Any) -> bool:
    """Whether a tool's return value is content (a block, a list of them, a ToolResult)."""
    if isinstance(value, (*_BLOCKS, ToolResult)):
        return True
    return type(value) is list and bool(value) and all(isinstance(v, _BLOCKS) for v in value)


def _block_to_wire(block: Any) -> dict[str, Any]:
    if isinstance(block, Text):
        return {MARK: "text", "text": block.text}
    if isinstance(block, (Image, Audio)):
        kind = "image" if isinstance(block, Image) else "audio"
        return {MARK: kind, "data": bytes(block.data), "mimeType": block.mime_type}
    if isinstance(block, (TextResource, BlobResource)):
        out: dict[str, Any] = {MARK: "resource", "uri": block.uri}
        if isinstance(block, TextResource):
            out["text"] = block.text
        else:
            out["blob"] = bytes(block.data)
        if block.mime_type is not None:
            out["mimeType"] = block.mime_type
        return out
    if isinstance(block, ResourceLink):
        link: dict[str, Any] = {MARK: "resource_link", "uri": block.uri, "name": block.name}
        for key, value in (
            ("title", block.title),
            ("description", block.description),
            ("mimeType", block.mime_type),
            ("size", block.size),
        ):
            if value is not None:
                link[key] = value
        return link
    raise TypeError(f"not a content block: {type(block).__name__}")


def to_wire(value: Any, enc_hook: Any = None) -> Any:
    """A content value as the worker sends it: marked dicts, bytes left as bytes.
    ``structured`` of a :class:`ToolResult` goes through ``enc_hook`` for pydantic."""
    if isinstance(value, ToolResult):
        structured = value.structured
        if structured is not None:
            structured = msgspec.to_builtins(structured, str_keys=True, enc_hook=enc_hook)
        return {
            MARK: "result",
            "content": [_block_to_wire(b) for b in value.content],
            "structured": structured,
        }
    if isinstance(value, list):
        return [_block_to_wire(b) for b in value]
    return _block_to_wire(value)


def is_wire_content(value: Any) -> bool:
    """Whether a value from the channel is content (see :func:`to_wire`)."""
    if type(value) is dict:
        return MARK in value
    return type(value) is list and bool(value) and type(value[0]) is dict and MARK in value[0]


def _block_from_wire(d: dict[str, Any]) -> Block:
    kind = d[MARK]
    if kind == "text":
        return Text(d["text"])
    if kind == "image":
        return Image(d["data"], d["mimeType"])
    if kind == "audio":
        return Audio(d["data"], d["mimeType"])
    if kind == "resource":
        if "blob" in d:
            return BlobResource(d["uri"], d["blob"], d.get("mimeType"))
        return TextResource(d["uri"], d["text"], d.get("mimeType"))
    return ResourceLink(
        d["uri"], d["name"], d.get("title"), d.get("description"), d.get("mimeType"), d.get("size")
    )


def from_wire(value: Any) -> Any:
    """The SDK objects for content from the channel (``Host.call``'s result); anything
    else as it is."""
    if not is_wire_content(value):
        return value
    if type(value) is list:
        return [_block_from_wire(d) for d in value]
    if value[MARK] == "result":
        return ToolResult([_block_from_wire(d) for d in value["content"]], value["structured"])
    return _block_from_wire(value)


def _mcp_block(d: dict[str, Any]) -> dict[str, Any]:
    kind = d[MARK]
    if kind in ("image", "audio"):
        return {
            "type": kind,
            "data": base64.b64encode(d["data"]).decode("ascii"),
            "mimeType": d["mimeType"],
        }
    if kind == "resource":
        resource: dict[str, Any] = {"uri": d["uri"]}
        if "blob" in d:
            resource["blob"] = base64.b64encode(d["blob"]).decode("ascii")
        else:
            resource["text"] = d["text"]
        if "mimeType" in d:
            resource["mimeType"] = d["mimeType"]
        return {"type": "resource", "resource": resource}
    out = {k: v for k, v in d.items() if k != MARK}
    out["type"] = kind
    return out


def to_mcp(value: Any) -> tuple[list[dict[str, Any]], Any, bool]:
    """Content from the channel as MCP content blocks (bytes in base64), the structured
    value, and whether there was one (a :class:`ToolResult` with ``structured`` set)."""
    if type(value) is list:
        return [_mcp_block(d) for d in value], None, False
    if value[MARK] == "result":
        blocks = [_mcp_block(d) for d in value["content"]]
        structured = value.get("structured")
        return blocks, structured, structured is not None
    return [_mcp_block(value)], None, False


def output_type(ret: Any) -> tuple[bool, Any]:
    """For a tool's return annotation: whether it is content, and the type of its
    structured value (None when it has none). ``ToolResult[M]`` gives ``M``."""
    from typing import Union, get_args, get_origin

    origin = get_origin(ret)
    if ret is ToolResult:
        return True, None
    if origin is ToolResult:
        return True, get_args(ret)[0]
    if isinstance(ret, type) and issubclass(ret, _BLOCKS):
        return True, None
    if origin is list:
        return output_type(get_args(ret)[0]) if get_args(ret) else (False, None)
    is_union = origin is Union or type(ret).__name__ == "UnionType"
    if is_union and all(output_type(a)[0] for a in get_args(ret)):
        return True, None
    return False, None
