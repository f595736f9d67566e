"""JSON-RPC 2.0 framing for the MCP front end: decoding, error codes, encoding. No I/O.

Incoming bytes decode into one :class:`Message` Struct (msgspec, validated on the way in);
anything that is not a well-formed JSON-RPC object becomes a :class:`RpcError` that says
what was wrong, carrying the request id when one could be read.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "HEADER_MISMATCH",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "UNSUPPORTED_PROTOCOL_VERSION",
    "Message",
    "RpcError",
    "decode_message",
    "encode",
    "error_response",
    "notification",
    "rejection",
    "response",
]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: 2026-07-28: an HTTP routing header disagrees with the request body.
HEADER_MISMATCH = -32020
#: 2026-07-28: the request's protocol version is not served; data names the supported ones.
UNSUPPORTED_PROTOCOL_VERSION = -32022

RequestId = int | str


class Message(msgspec.Struct, omit_defaults=True):
    """One JSON-RPC message as received: a request, a notification or a response."""

    jsonrpc: str | msgspec.UnsetType = msgspec.UNSET
    id: int | str | msgspec.UnsetType | None = msgspec.UNSET
    method: str | msgspec.UnsetType = msgspec.UNSET
    params: dict[str, Any] | msgspec.UnsetType | None = msgspec.UNSET
    result: Any = msgspec.UNSET
    error: Any = msgspec.UNSET

    @property
    def is_request(self) -> bool:
        return self.method is not msgspec.UNSET and self.id is not msgspec.UNSET

    @property
    def is_notification(self) -> bool:
        return self.method is not msgspec.UNSET and self.id is msgspec.UNSET


class RpcError(Exception):
    """A JSON-RPC error to send back: ``code``, a message for people, optional ``data``."""

    def __init__(
        self, code: int, message: str, data: Any = None, *, id: RequestId | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.id = id

    def to_wire(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


_decoder = msgspec.json.Decoder(Message)
_any_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def rejection(err: RpcError) -> str:
    """The reason label of input refused before it became a request."""
    return {PARSE_ERROR: "parse_error", INVALID_REQUEST: "invalid_request"}.get(
        err.code, "invalid_message"
    )


def _salvage_id(data: bytes | str) -> RequestId | None:
    """The id of a message that failed validation, if it is readable at all."""
    try:
        obj = _any_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None
    if isinstance(obj, dict):
        rid = obj.get("id")
        if isinstance(rid, (int, str)) and not isinstance(rid, bool):
            return rid
    return None


def decode_message(data: bytes | str) -> Message:
    """Decode and check one message; raise :class:`RpcError` (parse or invalid request)."""
    try:
        msg = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        rid = _salvage_id(data)
        if isinstance(_safe_any(data), list):
            raise RpcError(
                INVALID_REQUEST,
                "JSON-RPC batches are not supported by MCP; send one message at a time",
            ) from None
        raise RpcError(
            INVALID_REQUEST, f"not a valid JSON-RPC 2.0 message: {exc}", id=rid
        ) from None
    except msgspec.DecodeError as exc:
        raise RpcError(PARSE_ERROR, f"the message is not valid JSON: {exc}") from None
    except RecursionError:
        # msgspec decodes recursively; input nested deeper than the interpreter's
        # recursion limit would otherwise escape as an exception nobody answers.
        raise RpcError(
            PARSE_ERROR,
            "the message is nested too deeply to decode; send JSON nested at most a few "
            "hundred levels deep",
        ) from None
    if msg.jsonrpc != "2.0":
        rid = msg.id if isinstance(msg.id, (int, str)) else None
        raise RpcError(
            INVALID_REQUEST, 'not a JSON-RPC 2.0 message: "jsonrpc" must be "2.0"', id=rid
        )
    if msg.method is msgspec.UNSET and msg.result is msgspec.UNSET and msg.error is msgspec.UNSET:
        rid = msg.id if isinstance(msg.id, (int, str)) else None
        raise RpcError(INVALID_REQUEST, 'a JSON-RPC request needs a "method"', id=rid)
    if msg.method is not msgspec.UNSET and msg.id is None:
        raise RpcError(INVALID_REQUEST, "a request id must be a string or a number, not null")
    return msg


def _safe_any(data: bytes | str) -> Any:
    try:
        return _any_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def response(rid: RequestId, result: Any) -> bytes:
    return _encoder.encode({"jsonrpc": "2.0", "id": rid, "result": result})


def error_response(rid: RequestId | None, err: RpcError) -> bytes:
    return _encoder.encode({"jsonrpc": "2.0", "id": rid, "error": err.to_wire()})


def notification(method: str, params: dict[str, Any]) -> bytes:
    return _encoder.encode({"jsonrpc": "2.0", "method": method, "params": params})
