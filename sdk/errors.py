"""The one exception tree of mcphost.

Every error mcphost raises is an :class:`MCPHostError`. Each class carries a stable
string ``code`` that crosses the wire protocol and the MCP front end unchanged, so a
client can branch on it. Messages say what happened, to what, and what to do next.

This module lives in the SDK because the SDK is the root of the dependency graph:
plugin authors raise :class:`ToolError`, the worker serialises any of these, and the
host re-creates them from their code with :func:`error_from_code`.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ApprovalRequired",
    "AskFailed",
    "AskUnsupported",
    "BatchResults",
    "Busy",
    "CallCancelled",
    "CompositionError",
    "CompositionFailed",
    "CompositionInvalid",
    "CompositionUnavailable",
    "ConfigError",
    "DescriptionsChanged",
    "FollowingHome",
    "HandshakeRefused",
    "HomeError",
    "HomeNotFound",
    "InvalidArguments",
    "MCPHostError",
    "NameClash",
    "PluginError",
    "PluginFailed",
    "PluginNotFound",
    "ProtocolError",
    "RegistryDamaged",
    "RegistryError",
    "ResourceNotFound",
    "StreamLimitExceeded",
    "ToolError",
    "ToolNotFound",
    "ToolTimeout",
    "VerificationError",
    "WorkerCrashed",
    "error_from_code",
]


class MCPHostError(Exception):
    """Root of every mcphost error; ``code`` is stable, ``data`` is JSON-safe detail."""

    code: ClassVar[str] = "mcphost_error"
    #: Process exit status the CLI uses for this error.
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data: dict[str, Any] = dict(data or {})

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """The error as it crosses a wire: code, message, data."""
        return {"code": self.code, "message": self.message, "data": self.data}


class ProtocolError(MCPHostError):
    """A peer broke the wire protocol: bad frame, oversized frame, version mismatch."""

    code = "protocol_error"


class HandshakeRefused(ProtocolError):
    """A worker's handshake declared tools the host does not accept (a bad name, a
    duplicate, an oversized description or schema, too many tools); it was stopped."""

    code = "handshake_refused"


class DescriptionsChanged(HandshakeRefused):
    """A worker's handshake lists tools whose names, descriptions or schemas differ from
    what the operator approved for its version (a rug pull): it is refused."""

    code = "descriptions_changed"


class ConfigError(MCPHostError):
    """The configuration (file, option or environment) is invalid."""

    code = "config_error"
    exit_code = 2


class NameClash(ConfigError):
    """Two plugins (or a plugin and a composition) would expose the same tool name; the
    message names both and the settings that decide the names."""

    code = "name_clash"


class HomeError(MCPHostError):
    """The mcphost home cannot be used: its path is not a directory or cannot be
    reached, it holds something else than a home, or a part of it has the wrong kind."""

    code = "home_error"


class HomeNotFound(HomeError):
    """A command that only reads found no mcphost home at the path it was given."""

    code = "home_not_found"


class ApprovalRequired(MCPHostError):
    """A change needs the operator's approval, and there was no terminal to ask on."""

    code = "approval_required"
    exit_code = 2


class PluginError(MCPHostError):
    """Something went wrong with a plugin or one of its calls."""

    code = "plugin_error"


class PluginNotFound(PluginError):
    """No plugin of that name is installed or discoverable."""

    code = "plugin_not_found"


class PluginFailed(PluginError):
    """The plugin crashed too often or could not start; it is marked failed."""

    code = "plugin_failed"


class ToolNotFound(PluginError):
    """The plugin exists but has no tool of that name."""

    code = "tool_not_found"


class ResourceNotFound(PluginError):
    """No plugin offers a resource of that URI."""

    code = "resource_not_found"


class InvalidArguments(PluginError):
    """The arguments do not match the tool's input schema."""

    code = "invalid_arguments"


class WorkerCrashed(PluginError):
    """The worker process serving the call died or stopped answering."""

    code = "worker_crashed"


class ToolTimeout(PluginError):
    """The call ran past its deadline and was cancelled."""

    code = "tool_timeout"


class CallCancelled(PluginError):
    """The call was cancelled by its caller."""

    code = "call_cancelled"


class Busy(PluginError):
    """The host could not take the call or stream now: a queue it waits in is full, or
    it waited there past its limit (a batch tool's queue, or admission of streams past
    ``streaming.admission_timeout``); ``data`` says which queue, why, and how long it
    waited. Try again later or raise the limits."""

    code = "busy"


class StreamLimitExceeded(PluginError):
    """A stream passed one of its limits (``data["limit"]`` names it, ``data["value"]``
    is its value) and its producer was cancelled; the items before were delivered."""

    code = "stream_limit"


class ToolError(PluginError):
    """A tool failed on purpose: plugin authors raise this with their own code.

    ``ToolError("no such city", code="not_found")`` reaches the caller with that code.
    """

    code = "tool_error"

    def __init__(
        self, message: str, *, code: str | None = None, data: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, data=data)
        if code is not None:
            self.code = code  # type: ignore[misc]


class AskUnsupported(PluginError):
    """A tool asked its client to sample or elicit, and nobody can answer: the call
    came with no MCP client (``Host.call``) and the host has no handler, or the client
    did not declare the capability."""

    code = "ask_unsupported"


class AskFailed(PluginError):
    """A tool asked its client to sample or elicit, and the client answered an error."""

    code = "ask_failed"


class VerificationError(MCPHostError):
    """A plugin's signature, manifest or files did not verify; nothing was started."""

    code = "verification_failed"


class RegistryError(MCPHostError):
    """The plugin registry refused or failed an operation."""

    code = "registry_error"


class RegistryDamaged(RegistryError):
    """The registry's database is lost, empty or unreadable while installed versions
    remain; nothing is changed until ``mcphost registry rebuild`` restores its records."""

    code = "registry_damaged"


class FollowingHome(RegistryError):
    """The home follows a primary (``serve --follow``): its registry and configuration
    change only by following; the change must be made on the primary."""

    code = "following_home"


class CompositionError(MCPHostError):
    """A composition (a workflow of tools run as one tool) could not be used."""

    code = "composition_error"


class CompositionInvalid(CompositionError):
    """A composition's definition is wrong: ``data["problems"]`` lists every problem,
    each naming its step and field."""

    code = "composition_invalid"
    exit_code = 2


class CompositionFailed(CompositionError):
    """A step of a composition failed (or its deadline passed): ``data`` names the step,
    the attempt, the step's input and what the earlier steps produced."""

    code = "composition_failed"


class CompositionUnavailable(CompositionError):
    """Compositions are switched off, or this one was marked unavailable (a plugin change
    it relies on was forced through); the message says why."""

    code = "composition_unavailable"


def _all_subclasses(cls: type[MCPHostError]) -> list[type[MCPHostError]]:
    out: list[type[MCPHostError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def error_from_code(code: str, message: str, data: dict[str, Any] | None = None) -> MCPHostError:
    """Re-create an error that crossed a wire; unknown codes become :class:`ToolError`."""
    classes: list[type[MCPHostError]] = [MCPHostError, *_all_subclasses(MCPHostError)]
    for cls in classes:
        if cls is not ToolError and cls.__dict__.get("code") == code:
            return cls(message, data=data)
    return ToolError(message, code=code, data=data)


class BatchResults(list[Any]):
    """A batch tool's results in which some items failed.

    The list holds one entry per item, in order, with None where an item failed;
    ``errors`` maps the index of each failed item to its ``(code, message, data)``. The
    worker sends it as a Result frame with per-item errors; the host hands each caller
    its own slice, or the error of its failed item (:meth:`error`).
    """

    __slots__ = ("errors",)

    def __init__(self, values: list[Any], errors: dict[int, tuple[str, str, dict[str, Any]]]):
        super().__init__(values)
        self.errors = errors

    def first_failed(self, start: int = 0, stop: int | None = None) -> int | None:
        """The index of the first failed item in ``[start, stop)``, or None."""
        stop = len(self) if stop is None else stop
        failed = [i for i in self.errors if start <= i < stop]
        return min(failed) if failed else None

    def error(self, index: int, item: int | None = None) -> MCPHostError:
        """A fresh error for the failed item at ``index``; its ``data["item"]`` is
        ``item`` (the item's place in its caller's own list), default ``index``."""
        code, message, data = self.errors[index]
        return error_from_code(code, message, {**data, "item": index if item is None else item})
