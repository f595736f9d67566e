"""The wire protocol between the host and a worker: frames as msgspec Structs.

A frame on the wire is a 4-byte big-endian length followed by that many bytes of
MessagePack encoding one of the :data:`Frame` structs below, tagged by the field ``t``.
This module does no I/O: :class:`FrameCodec` turns frames into bytes and bytes back,
so it is tested with bytes alone. See docs/protocol.md.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

from mcphost.sdk.errors import BatchResults, ProtocolError
from mcphost.sdk.features import PromptSpec, ResourceSpec, TemplateSpec
from mcphost.sdk.schema import ToolSpec

from .buffers import OutBuffer

__all__ = [
    "DEFAULT_MAX_FRAME",
    "ITEM_OVERHEAD",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Answer",
    "Ask",
    "Call",
    "Cancel",
    "Credit",
    "Error",
    "Frame",
    "FrameCodec",
    "Hello",
    "ItemBatch",
    "ItemError",
    "Items",
    "Log",
    "Notify",
    "Ping",
    "Pong",
    "Progress",
    "Result",
    "Shutdown",
    "StreamEnd",
    "StreamItem",
    "Welcome",
    "item_size",
    "negotiate",
    "result_frame",
]

#: The newest protocol version this side speaks; peers agree on the highest common one.
#: Version 2 adds byte credit to streams (``Call.window_bytes``, ``Credit.bytes``);
#: version 3 adds per-item errors of batch tools (``Result.errors``) and lets a call ask
#: its client (:class:`Ask`, :class:`Answer`); version 4 carries several stream items in
#: one frame (:class:`Items`).
PROTOCOL_VERSION = 4
SUPPORTED_VERSIONS = (1, 2, 3, 4)
#: The first version whose Result frames may carry per-item errors.
ITEM_ERRORS_VERSION = 3
#: The first version with :class:`Items` frames (older hosts get one StreamItem per item).
ITEMS_VERSION = 4
#: Frames larger than this end the connection (both sides can be configured lower).
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
HEADER = struct.Struct(">I")
_NO_LENGTH = bytes(HEADER.size)


class Hello(msgspec.Struct, frozen=True, tag="hello", tag_field="t"):
    """Worker -> host, first frame: who I am, which versions I speak, my tools; and my
    resources, resource templates and prompts (empty from a worker that has none or
    predates them)."""

    versions: list[int]
    plugin: str
    plugin_version: str
    tools: list[ToolSpec]
    pid: int = 0
    resources: list[ResourceSpec] = []
    templates: list[TemplateSpec] = []
    prompts: list[PromptSpec] = []


class Welcome(msgspec.Struct, frozen=True, tag="welcome", tag_field="t"):
    """Host -> worker, answer to Hello: the version chosen and the session's limits."""

    version: int
    max_frame: int = DEFAULT_MAX_FRAME


class Call(msgspec.Struct, frozen=True, tag="call", tag_field="t"):
    """Host -> worker: run ``tool`` with ``args``. ``timeout`` is seconds left, or None.

    For a streaming call ``window`` is the number of items the worker may send before
    it must wait for a :class:`Credit`; from version 2 ``window_bytes`` (when above 0)
    also bounds the bytes of items (their frames' bodies) sent and not yet credited: the
    worker sends an item only while those are below it. ``traceparent`` is the W3C
    trace context of the host's span for the call ("" when the host is not tracing);
    the tool's own spans nest under it.

    ``kind`` says what runs: "tool" (``tool`` names it), "resource" (``tool`` is the
    URI to read), "prompt" (``tool`` names it, ``args`` are its arguments) or
    "complete" (``args`` holds MCP's ``ref``, ``argument`` and ``context``). Every kind
    answers with a :class:`Result` (for the last three, MCP's result object) or an
    :class:`Error`, under the same deadline and cancellation.
    """

    id: int
    tool: str
    args: dict[str, Any]
    timeout: float | None = None
    stream: bool = False
    window: int = 0
    progress: bool = False
    traceparent: str = ""
    window_bytes: int = 0
    kind: str = "tool"


class ItemError(msgspec.Struct, frozen=True, omit_defaults=True):
    """One failed item of a batch tool's answer: its index in the list, and its error."""

    index: int
    code: str
    message: str
    data: dict[str, Any] = {}


class Result(msgspec.Struct, frozen=True, tag="result", tag_field="t", omit_defaults=True):
    """Worker -> host: the call finished with ``value``.

    From version 3, a batch tool's answer may hold items that failed on their own:
    ``value`` is then the list with None in their places and ``errors`` says which and
    why (empty, and left out of the frame, when every item succeeded).
    """

    id: int
    value: Any
    errors: list[ItemError] = []


class Error(msgspec.Struct, frozen=True, tag="error", tag_field="t"):
    """Worker -> host: the call (or, with id 0, the worker) failed with a stable code."""

    id: int
    code: str
    message: str
    data: dict[str, Any] = {}


class StreamItem(msgspec.Struct, frozen=True, tag="item", tag_field="t"):
    """Worker -> host: the next item of a stream; ``seq`` counts from 0."""

    id: int
    seq: int
    value: Any


class Items(msgspec.Struct, frozen=True, tag="items", tag_field="t"):
    """Worker -> host (version 4): the next items of a stream, in order, the first of
    them numbered ``seq``. Each value stays the MessagePack it was encoded to, so the
    host learns every item's size (its bytes, which byte credit and the watermarks
    count) from the frame itself and decodes each value on its own."""

    id: int
    seq: int
    values: list[msgspec.Raw]


class _ItemsOut(msgspec.Struct, frozen=True, tag="items", tag_field="t"):
    """An :class:`Items` frame as :class:`ItemBatch` writes it: the values' array
    encoded already (the same bytes on the wire)."""

    id: int
    seq: int
    values: msgspec.Raw


class StreamEnd(msgspec.Struct, frozen=True, tag="end", tag_field="t"):
    """Worker -> host: the stream has no more items; ``count`` is how many were sent."""

    id: int
    count: int


class Credit(msgspec.Struct, frozen=True, tag="credit", tag_field="t"):
    """Host -> worker: the worker may send ``n`` more items (and, from version 2,
    ``bytes`` more bytes of them)."""

    id: int
    n: int
    bytes: int = 0


class Cancel(msgspec.Struct, frozen=True, tag="cancel", tag_field="t"):
    """Host -> worker: stop the call (a stream's generator is closed)."""

    id: int


class Progress(msgspec.Struct, frozen=True, tag="progress", tag_field="t"):
    """Worker -> host: how far a call has come."""

    id: int
    progress: float
    total: float | None = None
    message: str | None = None


class Log(msgspec.Struct, frozen=True, tag="log", tag_field="t"):
    """Worker -> host: a log line, tied to a call when ``id`` is not 0."""

    level: str
    message: str
    id: int = 0


class Notify(msgspec.Struct, frozen=True, tag="notify", tag_field="t"):
    """Worker -> host: something the plugin announces outside any answer; ``kind``
    "resource_updated" says resource ``uri`` changed (``ctx.notify_resource_updated``).
    A host ignores kinds it does not know."""

    kind: str
    uri: str = ""


class Ask(msgspec.Struct, frozen=True, tag="ask", tag_field="t"):
    """Worker -> host (version 3): call ``id`` asks its client something; ``n`` numbers
    the asks of one call from 1. ``kind`` is "sample" (``params`` as MCP's
    ``sampling/createMessage``) or "elicit" (as ``elicitation/create``)."""

    id: int
    n: int
    kind: str
    params: dict[str, Any]


class Answer(msgspec.Struct, frozen=True, tag="answer", tag_field="t"):
    """Host -> worker (version 3): the answer to ask ``n`` of call ``id``: ``value``
    (the MCP result), or a stable error ``code`` and ``message`` when ``code`` is set."""

    id: int
    n: int
    value: Any = None
    code: str = ""
    message: str = ""


class Ping(msgspec.Struct, frozen=True, tag="ping", tag_field="t"):
    """Host -> worker: are you alive? The worker answers with the same ``n``."""

    n: int


class Pong(msgspec.Struct, frozen=True, tag="pong", tag_field="t"):
    """Worker -> host: answer to :class:`Ping`. ``stuck`` counts the worker's pool
    threads still running calls that were already answered (past their deadline, or
    cancelled); when all of them are, the host replaces the worker."""

    n: int
    stuck: int = 0


class Shutdown(msgspec.Struct, frozen=True, tag="shutdown", tag_field="t"):
    """Host -> worker: finish or cancel what runs and exit."""

    reason: str = ""


Frame = (
    Hello
    | Welcome
    | Call
    | Result
    | Error
    | StreamItem
    | Items
    | StreamEnd
    | Credit
    | Cancel
    | Progress
    | Log
    | Notify
    | Ask
    | Answer
    | Ping
    | Pong
    | Shutdown
)


class FrameCodec:
    """Encodes frames to length-prefixed bytes and decodes bodies; build once, reuse."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[Frame] = msgspec.msgpack.Decoder(Frame)
        self._values: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder()

    def encode(self, frame: Frame) -> bytes:
        """The frame's bytes with its length prefix."""
        body = self._encoder.encode(frame)
        if len(body) > self.max_frame:
            raise ProtocolError(
                f"{type(frame).__name__} frame of {len(body)} bytes is over the limit of "
                f"{self.max_frame} bytes; return smaller results or stream them"
            )
        return HEADER.pack(len(body)) + body

    def encode_into(self, frame: Frame, out: bytearray) -> None:
        """Append the frame with its length prefix to ``out``, so frames sent together
        leave in one write; over the limit ``out`` is left as it was."""
        start = len(out)
        out += _NO_LENGTH
        try:
            self._encoder.encode_into(frame, out, -1)
        except BaseException:
            del out[start:]  # no half-encoded frame before the next one
            raise
        n = len(out) - start - HEADER.size
        if n > self.max_frame:
            del out[start:]
            raise ProtocolError(
                f"{type(frame).__name__} frame of {n} bytes is over the limit of "
                f"{self.max_frame} bytes; return smaller results or stream them"
            )
        HEADER.pack_into(out, start, n)

    def encode_out(self, frame: Frame, out: OutBuffer) -> int:
        """Append the frame with its length prefix to ``out`` (as :meth:`encode_into`,
        into a buffer that may keep its memory between large frames); returns the length
        of its body. Over the limit ``out`` is left as it was."""
        if out.kept:
            body = out.start()
        else:  # OutBuffer.start, inline for the common small frame
            body = out.used + HEADER.size
            if len(out.data) == out.used:
                out.data += _NO_LENGTH
            elif len(out.data) < body:
                out.data[out.used :] = _NO_LENGTH
        data = out.data
        self._encoder.encode_into(frame, data, body)
        n = len(data) - body
        if n > self.max_frame:
            raise ProtocolError(
                f"{type(frame).__name__} frame of {n} bytes is over the limit of "
                f"{self.max_frame} bytes; return smaller results or stream them"
            )
        HEADER.pack_into(data, body - HEADER.size, n)
        out.used = body + n
        return n

    def body_length(self, header: bytes | bytearray | memoryview, pos: int = 0) -> int:
        """Read the length prefix at ``pos``; refuse lengths over the limit before the body
        is read."""
        (n,) = HEADER.unpack_from(header, pos)
        if n > self.max_frame:
            raise ProtocolError(
                f"peer announced a frame of {n} bytes, over the limit of {self.max_frame}"
            )
        return int(n)

    def decode_value(self, raw: msgspec.Raw) -> Any:
        """One value of an :class:`Items` frame; bad bytes raise ProtocolError."""
        try:
            return self._values.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"malformed stream item from peer: {exc}") from None

    def decode(self, body: bytes | bytearray | memoryview) -> Frame:
        """One frame from its body (without the prefix); bad bytes raise ProtocolError."""
        try:
            return self._decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            # msgspec reports a string that is not UTF-8 as UnicodeDecodeError.
            raise ProtocolError(f"malformed frame from peer: {exc}") from None

    def decode_stream(self, data: bytes) -> tuple[list[Frame], bytes]:
        """Split a buffer into whole frames; returns them and the incomplete rest."""
        frames: list[Frame] = []
        view = memoryview(data)
        pos = 0
        while len(view) - pos >= HEADER.size:
            n = self.body_length(view, pos)
            if len(view) - pos - HEADER.size < n:
                break
            start = pos + HEADER.size
            frames.append(self.decode(bytes(view[start : start + n])))
            pos = start + n
        return frames, bytes(view[pos:])


#: Bytes of an Items frame besides its values, at most: the map with its keys, the tag,
#: id and seq (9 bytes each at most) and the values' array header.
ITEMS_ENVELOPE = 64
#: What an item of an Items frame counts besides its value's bytes, for byte credit,
#: watermarks and limits alike: about the envelope a frame of its own had (an ``item``
#: frame's keys, tag, id and seq take 23 bytes or more). So a byte window or watermark
#: bounds about as many items as before frames carried several, and tiny items (an
#: int is 1 byte) cannot crowd a host's buffer by the hundred thousand.
ITEM_OVERHEAD = 24
_ARRAY16 = struct.Struct(">BH")
_ARRAY32 = struct.Struct(">BI")


class ItemBatch:
    """Items of one stream encoded one by one, to leave together in one :class:`Items`
    frame (version 4).

    :meth:`add` encodes a value at once and returns its size, so the sender counts
    every item's bytes against its byte credit as it goes; :meth:`encode_into` appends
    the frame to an outgoing buffer and empties the batch. The batch never grows past
    the codec's frame limit: :meth:`add` says when the value must start a new frame.
    """

    __slots__ = ("_encode_into", "count", "id", "max_frame", "seq", "values")

    def __init__(self, codec: FrameCodec) -> None:
        self._encode_into = codec._encoder.encode_into
        self.max_frame = codec.max_frame
        self.id = 0
        self.seq = 0
        self.count = 0
        self.values = bytearray()

    def add(self, call_id: int, seq: int, value: Any) -> int:
        """Append item ``seq`` of stream ``call_id``; returns its size as credit counts
        it (:func:`item_size`), or -1 (and nothing added) when it does not belong in
        this batch: another stream's, not the next ``seq``, or too large to share the
        frame (send the batch, then add it again). A value too large for any frame
        raises ProtocolError."""
        values = self.values
        start = len(values)
        if self.count and (call_id != self.id or seq != self.seq + self.count):
            return -1
        try:
            self._encode_into(value, values, -1)
        except BaseException:
            del values[start:]  # no half-encoded value in the frame
            raise
        size = len(values) - start
        if start + size + ITEMS_ENVELOPE > self.max_frame:
            del values[start:]
            if size + ITEMS_ENVELOPE > self.max_frame:
                raise ProtocolError(
                    f"stream item of {size} bytes (a frame of up to {size + ITEMS_ENVELOPE} "
                    f"with it) is over the frame limit of {self.max_frame} bytes; yield "
                    "smaller items"
                )
            return -1
        if not self.count:
            self.id = call_id
            self.seq = seq
        self.count += 1
        return size + ITEM_OVERHEAD

    def encode_into(self, codec: FrameCodec, out: bytearray | OutBuffer) -> None:
        """Append the batch as one Items frame (with its length prefix) to ``out``, and
        empty it; nothing when it is empty."""
        n = self.count
        if not n:
            return
        if n < 16:
            head = bytes((0x90 | n,))
        elif n < 1 << 16:
            head = _ARRAY16.pack(0xDC, n)
        else:
            head = _ARRAY32.pack(0xDD, n)
        values = msgspec.Raw(head + self.values)
        self.count = 0
        self.values.clear()
        frame: Any = _ItemsOut(id=self.id, seq=self.seq, values=values)
        if isinstance(out, OutBuffer):
            codec.encode_out(frame, out)
        else:
            codec.encode_into(frame, out)


def item_size(raw: msgspec.Raw) -> int:
    """The bytes an item of an Items frame counts for (credit, watermarks, limits): its
    value's, plus :data:`ITEM_OVERHEAD`."""
    return len(raw) + ITEM_OVERHEAD


def negotiate(theirs: list[int], ours: tuple[int, ...] = SUPPORTED_VERSIONS) -> int:
    """The highest version both sides speak, or ProtocolError saying what each speaks."""
    common = set(theirs) & set(ours)
    if not common:
        raise ProtocolError(
            f"protocol version mismatch: the worker speaks {sorted(theirs)}, this host "
            f"speaks {list(ours)}; install matching versions of mcphost for host and plugin",
            data={"theirs": sorted(theirs), "ours": list(ours)},
        )
    return max(common)


def result_frame(call_id: int, value: Any, version: int) -> Result | Error:
    """The frame answering a call that returned ``value``: a Result, with per-item
    errors when ``value`` is :class:`~mcphost.sdk.errors.BatchResults`. A host that
    speaks no version with per-item errors gets the first failed item's Error instead
    (it could not tell a failed item from a None result)."""
    if type(value) is not BatchResults:
        return Result(id=call_id, value=value)
    if version < ITEM_ERRORS_VERSION:
        index = min(value.errors)
        code, message, data = value.errors[index]
        return Error(id=call_id, code=code, message=message, data={**data, "item": index})
    errors = [
        ItemError(index=i, code=code, message=message, data=data)
        for i, (code, message, data) in sorted(value.errors.items())
    ]
    return Result(id=call_id, value=list(value), errors=errors)
