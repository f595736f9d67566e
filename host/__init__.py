"""mcphost.host: the embeddable host, its supervision, hooks, configuration and CLI."""

from .config import HostConfig, load_config
from .home import Home, default_home
from .hooks import hookimpl, hookspec
from .host import Host, HostEvent, ToolInfo
from .sources import ENTRY_POINT_GROUP, PluginSource, discover_directory, discover_environment
from .sync import SyncHost

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
