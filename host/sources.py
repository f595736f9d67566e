"""Where plugins come from: entry points in the host's environment, directories, the registry.

A :class:`PluginSource` describes one runnable plugin version without importing it:
everything is read from distribution metadata.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import importlib_metadata as md
import msgspec

from mcphost.registry.approvals import ApprovedItem
from mcphost.sandbox.isolation import Grants, Limits
from mcphost.sdk.plugin import ENTRY_POINT_GROUP
from mcphost.sdk.schema import ToolSpec

__all__ = [
    "ENTRY_POINT_GROUP",
    "PLUGIN_PATH_VARIABLE",
    "PluginSource",
    "discover_directory",
    "discover_environment",
    "discover_plugin_path",
]

#: Environment variable naming extra plugin directories, separated like ``PATH``.
PLUGIN_PATH_VARIABLE = "MCPHOST_PLUGIN_PATH"


class PluginSource(msgspec.Struct, kw_only=True):
    """One plugin version the host can run."""

    name: str
    version: str
    #: ``module:attr`` of the Plugin object.
    entry: str
    #: Directories the worker puts first on sys.path.
    paths: list[str]
    #: "environment", "directory" or "registry".
    origin: str
    #: The distribution's dist-info directory (what verification reads).
    dist_info: str = ""
    #: The root of the plugin's installed tree (what verification walks).
    root: str = ""
    #: Tool descriptors when known without starting a worker (the registry keeps them).
    tools: list[ToolSpec] | None = None
    grants: Grants = Grants()
    limits: Limits | None = None
    key_id: str | None = None
    #: What the operator approved of its tools (the registry keeps it); a worker whose
    #: handshake differs is refused. None: nothing recorded, nothing compared.
    approved: list[ApprovedItem] | None = None

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


def _sources(dists: Iterable[Any], origin: str) -> list[PluginSource]:
    out: list[PluginSource] = []
    seen: set[str] = set()
    for dist in dists:
        eps = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
        for ep in eps:
            if ep.name in seen:
                continue
            seen.add(ep.name)
            root = Path(str(dist.locate_file(""))).resolve()
            dist_info = getattr(dist, "_path", None)
            out.append(
                PluginSource(
                    name=ep.name,
                    version=dist.version,
                    entry=ep.value,
                    paths=[str(root)],
                    origin=origin,
                    dist_info=str(dist_info) if dist_info is not None else "",
                    root=str(root),
                )
            )
    return out


def discover_environment() -> list[PluginSource]:
    """Plugins installed in the host's own Python environment (entry-point group)."""
    return _sources(md.distributions(), "environment")


def discover_directory(path: str | Path) -> list[PluginSource]:
    """Plugins installed into one directory (e.g. with ``pip install --target``)."""
    return _sources(md.distributions(path=[str(path)]), "directory")


def discover_plugin_path() -> list[PluginSource]:
    """Plugins in the directories named by ``$MCPHOST_PLUGIN_PATH`` (``os.pathsep``-separated).

    Each directory is one a plugin was installed into with ``pip install --target``;
    empty entries and directories that do not exist are skipped.
    """
    out: list[PluginSource] = []
    for entry in os.environ.get(PLUGIN_PATH_VARIABLE, "").split(os.pathsep):
        if entry and Path(entry).is_dir():
            out.extend(discover_directory(entry))
    return out
