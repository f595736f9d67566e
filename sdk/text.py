"""Text a plugin wrote, made safe for an operator's terminal.

A tool's name or description, a version string, a log line: whatever plugin code wrote
may hold escape sequences that recolour, retitle or rewrite the operator's terminal,
or a carriage return that hides what came before it on the line. :func:`printable`
removes every control character (C0, DEL, C1, so ESC and CSI with them) and the Unicode
controls that reorder text (bidirectional overrides and isolates); in a one-line field
line breaks and tabs become spaces.
"""

from __future__ import annotations

__all__ = ["printable"]

_CONTROLS = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]
#: Bidirectional embeddings, overrides and isolates; line and paragraph separators.
_REORDERING = [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029]
_BREAKS = (0x09, 0x0A, 0x0D, 0x0B, 0x0C, 0x85, 0x2028, 0x2029)

_ONE_LINE: dict[int, str | None] = {c: None for c in (*_CONTROLS, *_REORDERING)}
_ONE_LINE.update({c: " " for c in _BREAKS})
_MULTI_LINE: dict[int, str | None] = {c: None for c in (*_CONTROLS, *_REORDERING)}
_MULTI_LINE.update({0x09: "\t", 0x0A: "\n"})


def printable(text: str, *, multiline: bool = False) -> str:
    """``text`` without control characters; with ``multiline`` it keeps its line breaks
    (``\\n``) and tabs, otherwise those become spaces."""
    return text.translate(_MULTI_LINE if multiline else _ONE_LINE)
