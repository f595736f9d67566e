"""The rules a plugin's tool declarations follow, and their bounds.

The SDK applies them when a tool is declared, so a plugin author hears about a bad name
at once; the host applies them again to every worker's handshake, because a worker is
plugin code and may send anything. Names follow MCP's rule for tool names (letters,
digits, ``_``, ``-`` and ``.``, 1 to 128 characters), which the host's full name
``<plugin>.<tool>`` must meet: so a tool's own name has no dot (the host adds one).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from .schema import ToolSpec

__all__ = [
    "MAX_DESCRIPTION_BYTES",
    "MAX_NAME_LENGTH",
    "MAX_SCHEMA_BYTES",
    "MAX_TOOLS",
    "tool_problem",
    "tools_problem",
]

#: Longest full tool name, ``<plugin>.<tool>`` (MCP's limit).
MAX_NAME_LENGTH = 128
#: Largest tool description, in bytes of UTF-8.
MAX_DESCRIPTION_BYTES = 8 * 1024
#: Largest input or output schema, in bytes of JSON.
MAX_SCHEMA_BYTES = 64 * 1024
#: Most tools one plugin may offer.
MAX_TOOLS = 1000

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]+")
_KINDS = ("call", "stream")


def _shown(name: str) -> str:
    """A name for a message: quoted with escapes (no control character gets through),
    and cut short when long."""
    return repr(name if len(name) <= 60 else name[:60] + "...")


def _schema_problem(which: str, schema: object) -> str | None:
    if not isinstance(schema, dict):
        return f"its {which} is a {type(schema).__name__}, not a JSON object"
    try:
        size = len(msgspec.json.encode(schema))
    except (msgspec.EncodeError, TypeError, ValueError, OverflowError) as exc:
        return f"its {which} is not JSON: {exc}"
    if size > MAX_SCHEMA_BYTES:
        return f"its {which} is {size:,} bytes of JSON, over the limit of {MAX_SCHEMA_BYTES:,}"
    return None


def tool_problem(plugin: str, spec: ToolSpec) -> str | None:
    """What is wrong with one tool declaration of ``plugin``, or None."""
    name = spec.name
    if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
        return (
            f"tool name {_shown(str(name))} is not allowed: use letters, digits, '_' and '-' "
            "(no '.', the host joins plugin and tool with one)"
        )
    full = len(plugin) + 1 + len(name)
    if full > MAX_NAME_LENGTH:
        return (
            f"tool name {_shown(name)} is too long: {plugin}.<tool> is {full} characters, "
            f"over MCP's limit of {MAX_NAME_LENGTH}"
        )
    what = f"tool {name}"
    if not isinstance(spec.description, str):
        return f"{what}: its description is not a string"
    size = len(spec.description.encode("utf-8", "surrogatepass"))
    if size > MAX_DESCRIPTION_BYTES:
        return (
            f"{what}: its description is {size:,} bytes, over the limit of "
            f"{MAX_DESCRIPTION_BYTES:,}"
        )
    problem = _schema_problem("input schema", spec.input_schema)
    if problem is None and spec.input_schema and spec.input_schema.get("type") != "object":
        problem = 'its input schema does not describe an object ("type": "object")'
    if problem is None and spec.output_schema is not None:
        problem = _schema_problem("output schema", spec.output_schema)
    if problem is None and spec.kind not in _KINDS:
        problem = f"its kind is {_shown(str(spec.kind))}, not one of {', '.join(_KINDS)}"
    return None if problem is None else f"{what}: {problem}"


def tools_problem(plugin: str, specs: Sequence[ToolSpec]) -> str | None:
    """What is wrong with the tools ``plugin`` declares, or None: the first problem found."""
    if len(specs) > MAX_TOOLS:
        return f"it offers {len(specs):,} tools, over the limit of {MAX_TOOLS:,}"
    seen: set[str] = set()
    for spec in specs:
        problem = tool_problem(plugin, spec)
        if problem is not None:
            return problem
        if spec.name in seen:
            return f"it offers two tools named {_shown(spec.name)}"
        seen.add(spec.name)
    return None
