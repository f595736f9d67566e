"""mcphost.sdk: what plugin authors import to write tools.

Write functions with type hints, register them on a :class:`Plugin`, and name that
object in your distribution's ``mcphost.plugins`` entry point.
"""

from .content import Audio, BlobResource, Image, ResourceLink, Text, TextResource
from .context import Context
from .errors import (
    CallCancelled,
    ConfigError,
    HandshakeRefused,
    InvalidArguments,
    MCPHostError,
    PluginError,
    PluginFailed,
    PluginNotFound,
    ProtocolError,
    RegistryDamaged,
    RegistryError,
    ResourceNotFound,
    ToolError,
    ToolNotFound,
    ToolTimeout,
    VerificationError,
    WorkerCrashed,
)
from .features import Message
from .plugin import ENTRY_POINT_GROUP, Plugin, Tool
from .schema import ToolSpec

__all__ = [
    "ENTRY_POINT_GROUP",
    "Audio",
    "BlobResource",
    "CallCancelled",
    "ConfigError",
    "Context",
    "HandshakeRefused",
    "Image",
    "InvalidArguments",
    "MCPHostError",
    "Message",
    "Plugin",
    "PluginError",
    "PluginFailed",
    "PluginNotFound",
    "ProtocolError",
    "RegistryDamaged",
    "RegistryError",
    "ResourceLink",
    "ResourceNotFound",
    "Text",
    "TextResource",
    "Tool",
    "ToolError",
    "ToolNotFound",
    "ToolSpec",
    "ToolTimeout",
    "VerificationError",
    "WorkerCrashed",
]
