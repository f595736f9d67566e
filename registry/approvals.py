"""What the operator approved of a version: each tool's name, description and schemas.

A plugin's descriptions are what a model reads and trusts; a new version (or a worker
whose code computes them at run time) could change them after the operator looked,
which is the "rug pull" of MCP tools. The registry records, per version, the items the
operator approved at install (``Approval``); a swap or rollback to a version whose items
differ asks again, showing :func:`diff`, and a host refuses a worker whose handshake
differs (:func:`differences`). The record is generic: an item has a kind (``tool`` now;
``prompt`` and ``resource`` take the same form) and a name, and its record is the JSON
object the diff compares. Pure: no I/O.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from typing import Any

import msgspec

from mcphost.sdk.schema import ToolSpec

__all__ = ["Approval", "ApprovedItem", "diff", "differences", "items_of_tools"]


class ApprovedItem(msgspec.Struct, frozen=True, kw_only=True):
    """One thing a client sees of a plugin, as approved."""

    #: "tool" (prompts and resources take "prompt" and "resource").
    kind: str
    name: str
    #: What was shown: for a tool, its name, description, input and output schema.
    record: dict[str, Any]


class Approval(msgspec.Struct, frozen=True, kw_only=True):
    """The approval of one version: when, by whom, and what."""

    #: Unix seconds.
    at: float
    #: The operating-system user who approved.
    by: str
    items: list[ApprovedItem]


def items_of_tools(tools: Iterable[ToolSpec]) -> list[ApprovedItem]:
    """The approvable record of each tool: what a client is shown of it."""
    return sorted(
        (
            ApprovedItem(
                kind="tool",
                name=t.name,
                record={
                    "name": t.name,
                    "description": t.description,
                    "input_schema": t.input_schema,
                    "output_schema": t.output_schema,
                },
            )
            for t in tools
        ),
        key=lambda i: (i.kind, i.name),
    )


def _index(items: Iterable[ApprovedItem]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(i.kind, i.name): i.record for i in items}


def differences(
    approved: Iterable[ApprovedItem], seen: Iterable[ApprovedItem], *, removals: bool = True
) -> list[str]:
    """One line per item added, removed (unless not ``removals``) or changed (and, for a
    change, which fields)."""
    old, new = _index(approved), _index(seen)
    out: list[str] = []
    for key in sorted(old.keys() | new.keys()):
        kind, name = key
        if key not in new:
            if removals:
                out.append(f"{kind} {name}: removed")
        elif key not in old:
            out.append(f"{kind} {name}: added")
        elif old[key] != new[key]:
            fields = sorted(
                f for f in old[key].keys() | new[key].keys() if old[key].get(f) != new[key].get(f)
            )
            out.append(f"{kind} {name}: {', '.join(fields)} changed")
    return out


def _lines(record: dict[str, Any]) -> list[str]:
    return json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def diff(
    approved: Iterable[ApprovedItem],
    seen: Iterable[ApprovedItem],
    before: str = "approved",
    after: str = "new",
    *,
    removals: bool = True,
) -> str:
    """A unified diff, item by item, of what changed between two records ("" if none;
    items removed are left out unless ``removals``)."""
    old, new = _index(approved), _index(seen)
    chunks: list[str] = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if a == b or (b is None and not removals):
            continue
        kind, name = key
        chunks.extend(
            difflib.unified_diff(
                _lines(a) if a is not None else [],
                _lines(b) if b is not None else [],
                fromfile=f"{kind} {name} ({before})",
                tofile=f"{kind} {name} ({after})",
                lineterm="",
            )
        )
    return "\n".join(chunks)
