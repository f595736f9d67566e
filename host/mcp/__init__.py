"""mcphost.host.mcp: the MCP front end, ``mcphost serve`` over stdio and streamable HTTP."""

from .catalog import Catalog, McpTool
from .jsonrpc import RpcError
from .server import HANDSHAKE_VERSIONS, MODERN_VERSIONS, McpServer, ServerOptions
from .session import Notifier, Session

__all__ = [
    "HANDSHAKE_VERSIONS",
    "MODERN_VERSIONS",
    "Catalog",
    "McpServer",
    "McpTool",
    "Notifier",
    "RpcError",
    "ServerOptions",
    "Session",
]
