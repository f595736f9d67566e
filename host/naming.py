"""The names callers see: how a plugin's tools (and, with the same rules, its prompts;
resource URIs are never renamed) are exposed, by the operator's ``[plugins.NAME]``
settings.

A plugin's item is exposed as ``<plugin>.<item>`` (``expose = "prefixed"``, the default)
or under the author's own name (``expose = "bare"``); ``[plugins.NAME.tools.TOOL]``
gives one tool another name or description. The canonical ``<plugin>.<item>`` always
resolves too, so code written against it keeps working. Two items exposed under one
name are a clash: :func:`build` lists them, :meth:`NameMap.check` refuses them naming
both owners. Pure: no I/O, no host.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from mcphost.sdk.errors import NameClash

from .config import PluginSettings, ToolOverride

__all__ = ["Clash", "Exposed", "NameMap", "build", "canonical", "expose"]


class Exposed(msgspec.Struct, frozen=True, kw_only=True):
    """One plugin item as callers see it."""

    #: The name it is listed and called by.
    name: str
    plugin: str
    #: The author's name of the item.
    item: str
    #: The operator's description, None to keep the author's.
    description: str | None = None


class Clash(msgspec.Struct, frozen=True, kw_only=True):
    """Two owners of one exposed name: ``first`` keeps it, ``second`` is refused."""

    name: str
    first: str
    second: str
    #: The plugin whose settings would resolve it ("" for a composition alone).
    plugin: str
    item: str
    kind: str = "tool"

    @property
    def message(self) -> str:
        prefixed = f'expose it prefixed (`[plugins.{self.plugin}] expose = "prefixed"`)'
        if self.kind == "tool":  # only tools have a table of renames
            fix = (
                f"give one another name (`[plugins.{self.plugin}.tools.{self.item}] name = "
                f'"..."`) or {prefixed}'
            )
        else:
            fix = prefixed
        return (
            f"the {self.kind} name {self.name!r} would be both {self.first} and "
            f"{self.second}; {fix}"
        )


def canonical(plugin: str, item: str) -> str:
    """The name that always resolves: ``<plugin>.<item>``."""
    return f"{plugin}.{item}"


def expose(plugin: str, item: str, settings: PluginSettings | None, kind: str = "tool") -> Exposed:
    """How ``plugin``'s ``item`` of ``kind`` is exposed under ``settings`` (None: the
    defaults). Overrides are read from the settings' table of that kind (``tools``)."""
    if settings is None:
        return Exposed(name=canonical(plugin, item), plugin=plugin, item=item)
    overrides: Mapping[str, ToolOverride] = getattr(settings, f"{kind}s", None) or {}
    override = overrides.get(item)
    if override is not None and override.name is not None:
        name = override.name
    elif settings.expose == "bare":
        name = item
    else:
        name = canonical(plugin, item)
    return Exposed(
        name=name,
        plugin=plugin,
        item=item,
        description=override.description if override is not None else None,
    )


def _owner(e: Exposed, kind: str) -> str:
    return f"{kind} {e.item} of plugin {e.plugin}"


class NameMap:
    """Every plugin item by its exposed name, and the clashes found building it."""

    def __init__(self) -> None:
        self.by_name: dict[str, Exposed] = {}
        #: (plugin, item) -> how it is exposed; a clash's loser keeps its canonical name.
        self.of: dict[tuple[str, str], Exposed] = {}
        self.clashes: list[Clash] = []

    def resolve(self, name: str) -> Exposed | None:
        """The item called ``name``: its exposed name first, else ``<plugin>.<item>``."""
        hit = self.by_name.get(name)
        if hit is not None:
            return hit
        plugin, dot, item = name.partition(".")
        if dot:
            return self.of.get((plugin, item))
        return None

    def check(self) -> None:
        """Raise :class:`NameClash` naming both owners of every clashing name."""
        if self.clashes:
            raise NameClash(
                "; ".join(c.message for c in self.clashes),
                data={
                    "clashes": [
                        {"name": c.name, "first": c.first, "second": c.second} for c in self.clashes
                    ]
                },
            )


def build(
    items: Mapping[str, Iterable[str]],
    settings: Mapping[str, PluginSettings],
    reserved: Mapping[str, str] | None = None,
    newcomer: str | None = None,
    kind: str = "tool",
) -> NameMap:
    """The names of ``items`` (plugin -> its item names) under ``settings`` (by plugin).

    ``reserved`` maps names taken already to what owns them (a composition's name to
    ``"composition <name>"``). Plugins are taken in name order, so which side of a clash
    keeps the name does not depend on the order they were found in; the other is served
    under its canonical name (when that is free) and the clash is listed. ``newcomer``
    (a plugin being installed or swapped) comes last: a clash names it second.
    """
    out = NameMap()
    owners: dict[str, str] = dict(reserved or {})
    for plugin in sorted(items, key=lambda p: (p == newcomer, p)):
        for item in sorted(set(items[plugin])):
            e = expose(plugin, item, settings.get(plugin), kind)
            if e.name in owners:
                out.clashes.append(
                    Clash(
                        name=e.name,
                        first=owners[e.name],
                        second=_owner(e, kind),
                        plugin=plugin,
                        item=item,
                        kind=kind,
                    )
                )
                name = canonical(plugin, item)
                e = Exposed(name=name, plugin=plugin, item=item, description=e.description)
                if name in owners:
                    continue
            owners[e.name] = _owner(e, kind)
            out.by_name[e.name] = e
            out.of[(plugin, item)] = e
    return out
