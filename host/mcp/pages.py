"""Pages of ``resources/list``, ``resources/templates/list`` and ``prompts/list``.

Each list is built afresh for every request (from the handshakes of the plugins'
workers) and sorted by a key that is unique within it: a resource's URI, a
template's URI template, a prompt's exposed name. A page holds at most the server's
page size of items (``--page-size``, as ``tools/list``); ``nextCursor`` is an opaque
string naming the list and the last key given, and the next page begins after that
key. Keys rather than offsets because the list may change between two pages (a
plugin's worker starting, an install): an item is then never given twice in one
walk, and one added after the cursor's key still appears in it.

A cursor that is not a string, was not made here, or was made for another list is
JSON-RPC ``-32602`` saying so and that the client should list again without one.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Callable, Sequence
from typing import Any

from .jsonrpc import INVALID_PARAMS, RpcError

__all__ = ["cursor_param", "decode_cursor", "encode_cursor", "page_by_key"]


def encode_cursor(tag: str, key: str) -> str:
    """The opaque cursor of the page after ``key`` in the list ``tag``."""
    return base64.urlsafe_b64encode(f"{tag}:{key}".encode()).decode()


def decode_cursor(method: str, tag: str, cursor: str) -> str:
    """The key after which the page of ``cursor`` begins; -32602 when it is not a
    cursor of the list ``tag``."""
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii")).decode()
    except (ValueError, UnicodeError, binascii.Error):
        raw = ""
    got, sep, key = raw.partition(":")
    if got != tag or not sep:
        raise RpcError(
            INVALID_PARAMS,
            f"{method}: cursor {cursor[:100]!r} is not one this server gave out for "
            f"{method}; list again without a cursor",
        )
    return key


def cursor_param(method: str, params: dict[str, Any]) -> str | None:
    """``params.cursor``: None, or a string (else -32602)."""
    cursor = params.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise RpcError(INVALID_PARAMS, f"{method}: cursor must be a string (a nextCursor)")
    return cursor


def page_by_key(
    tag: str,
    items: Sequence[dict[str, Any]],
    key: Callable[[dict[str, Any]], str],
    after: str | None,
    page_size: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """The page of ``items`` (sorted by ``key``, unique) that begins after the key
    ``after`` (a decoded cursor; None: the first page), with the cursor of the next
    page or None when it is the last."""
    size = max(1, page_size)
    start = 0 if after is None else bisect.bisect_right([key(i) for i in items], after)
    page = list(items[start : start + size])
    more = start + size < len(items)
    return page, (encode_cursor(tag, key(page[-1])) if more and page else None)
