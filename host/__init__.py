"""mcphost.host: the embeddable host, its supervision, hooks, configuration and CLI.

The names below load on first use, so that a part of mcphost (the CLI answering an MCP
client, say) does not pay for the configuration's models or the host until it needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import HostConfig, load_config
    from .home import Home, default_home
    from .hooks import hookimpl, hookspec
    from .host import Host, HostEvent, ToolInfo
    from .sources import ENTRY_POINT_GROUP, PluginSource, discover_directory, discover_environment
    from .sync import SyncHost

_WHERE = {
    "ENTRY_POINT_GROUP": "sources",
    "Home": "home",
    "Host": "host",
    "HostConfig": "config",
    "HostEvent": "host",
    "PluginSource": "sources",
    "SyncHost": "sync",
    "ToolInfo": "host",
    "default_home": "home",
    "discover_directory": "sources",
    "discover_environment": "sources",
    "hookimpl": "hooks",
    "hookspec": "hooks",
    "load_config": "config",
}

__all__ = [
    "ENTRY_POINT_GROUP",
    "Home",
    "Host",
    "HostConfig",
    "HostEvent",
    "PluginSource",
    "SyncHost",
    "ToolInfo",
    "default_home",
    "discover_directory",
    "discover_environment",
    "hookimpl",
    "hookspec",
    "load_config",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
