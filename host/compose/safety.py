"""Swap safety: would a plugin change break an installed composition?

A swap, rollback or removal changes the tools a plugin offers. Each installed
composition is checked against the tools before and after the change; a problem that
appears only after it (a tool gone, a parameter or an output field changed in a way the
composition's data flow relies on) breaks that composition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from mcphost.sdk.errors import RegistryError
from mcphost.sdk.schema import ToolSpec

from ..home import Home
from .model import Problem
from .store import CompositionStore, store_path
from .validate import check

__all__ = ["Breakage", "breakages", "guard", "refuse_or_mark"]


class _Tool(msgspec.Struct, frozen=True):
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    kind: str
    plugin: str


class Breakage(msgspec.Struct, frozen=True):
    """One composition and what the change breaks in it."""

    composition: str
    problems: list[Problem]

    def describe(self) -> str:
        return f"composition {self.composition}: " + "; ".join(str(p) for p in self.problems)


def _catalog(tools: dict[str, list[ToolSpec] | None]) -> dict[str, _Tool]:
    out: dict[str, _Tool] = {}
    for plugin, specs in tools.items():
        for s in specs or []:
            out[f"{plugin}.{s.name}"] = _Tool(s.input_schema, s.output_schema, s.kind, plugin)
    return out


def breakages(
    home: Home,
    active_tools: dict[str, list[ToolSpec] | None],
    plugin: str,
    new_tools: list[ToolSpec] | None,
) -> list[Breakage]:
    """The installed compositions that ``plugin`` serving ``new_tools`` (None: no
    version at all) would break, given the tools every plugin serves now."""
    if not store_path(home).exists():
        return []
    with CompositionStore(home) as store:
        comps = [c for c, _, why in store.active() if why is None]
    before = _catalog(active_tools)
    after = _catalog({**active_tools, plugin: new_tools})
    out = []
    for comp in comps:
        if not any(s.tool.startswith(f"{plugin}.") for s in comp.steps):
            continue
        old = {str(p) for p in check(comp, before)}
        new = [p for p in check(comp, after) if str(p) not in old]
        if new:
            out.append(Breakage(comp.name, new))
    return out


def refuse_or_mark(
    home: Home, found: Sequence[Breakage], *, force: bool, change: str, command: str
) -> list[str]:
    """Refuse the change (``RegistryError``) unless ``force``; with it, mark each broken
    composition unavailable with the reason. Returns the compositions marked."""
    if not found:
        return []
    lines = "\n".join(f"  - {b.describe()}" for b in found)
    if not force:
        raise RegistryError(
            f"{change} would break {len(found)} installed composition"
            f"{'s' if len(found) != 1 else ''}:\n{lines}\nFix them first, or run `{command} "
            "--force` to change anyway and mark them unavailable",
            data={
                "compositions": {b.composition: [p.model_dump() for p in b.problems] for b in found}
            },
        )
    with CompositionStore(home) as store:
        for b in found:
            store.mark_unavailable(
                b.composition, f"{change} broke it: " + "; ".join(str(p) for p in b.problems)
            )
    return [b.composition for b in found]


def guard(
    home: Home,
    active_tools: dict[str, list[ToolSpec] | None],
    plugin: str,
    new_tools: list[ToolSpec] | None,
    *,
    force: bool,
    change: str,
    command: str,
) -> list[Breakage]:
    """Check before a change: raises when it breaks a composition and ``force`` is not
    given; returns what to mark unavailable once the change is made."""
    found = breakages(home, active_tools, plugin, new_tools)
    if found and not force:
        refuse_or_mark(home, found, force=False, change=change, command=command)
    return found
