"""What a tool looks like to callers of the host: a plugin's tool or a composition."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["ToolInfo"]


class ToolInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A tool as the host offers it: ``name`` is the name callers use (``<plugin>.<tool>``
    unless the operator exposes the plugin bare or renames the tool; ``tool`` is always
    the author's name, ``description`` the operator's when overridden); for a
    composition it is ``<group>.<name>``, ``plugin`` is empty and ``version`` its
    registry version."""

    name: str
    plugin: str
    version: str
    tool: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None = None
    kind: str = "call"
    batch: bool = False
