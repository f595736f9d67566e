"""The rules a plugin's tool declarations follow, and their bounds.

The SDK applies them when a tool is declared, so a plugin author hears about a bad name
at once; the host applies them again to every worker's handshake, because a worker is
plugin code and may send anything. Names follow MCP's rule for tool names (letters,
digits, ``_``, ``-`` and ``.``, 1 to 128 characters), which the host's full name
``<plugin>.<tool>`` must meet: so a tool's own name has no dot (the host adds one).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import msgspec

from .schema import BatchSettings, ToolSpec

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_DESCRIPTION_BYTES",
    "MAX_NAME_LENGTH",
    "MAX_SCHEMA_BYTES",
    "MAX_TOOLS",
    "batch_problem",
    "key_problem",
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

#: Largest batch a tool may ask for (``max_batch_size``).
MAX_BATCH_SIZE = 65536
#: Longest ``batch_key``.
MAX_KEY_LENGTH = 512
#: Longest ``max_queue_delay_ms``, and ``target_latency_ms``.
MAX_QUEUE_DELAY_MS = 10_000
MAX_TARGET_LATENCY_MS = 3_600_000

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]+")
#: A ``batch_key`` that is an argument's name (read without JMESPath).
KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
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
    if problem is None and spec.batching is not None:
        if not spec.batch:
            problem = "it has batch settings but is not a batch tool (batch=True)"
        else:
            problem = batch_problem(spec.batching, spec.input_schema)
    return None if problem is None else f"{what}: {problem}"


def _number_problem(name: str, value: Any, low: float, high: float, *, above: bool) -> str | None:
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > low if above else value >= low)
        and value <= high
    )
    if ok:
        return None
    bound = f"above {low:g}" if above else f"from {low:g}"
    return f"its {name} is {value!r}; it must be a number {bound} up to {high:g}"


def key_problem(key: str, input_schema: dict[str, Any] | None = None) -> str | None:
    """What is wrong with a ``batch_key``, or None: an argument's name must name a
    parameter; anything else must compile as JMESPath (imported only then)."""
    if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH:
        return f"its batch_key must be a string of at most {MAX_KEY_LENGTH} characters"
    if not key:
        return None
    if KEY_NAME.fullmatch(key):
        props = (input_schema or {}).get("properties")
        if isinstance(props, dict) and props and key not in props:
            return (
                f"its batch_key {_shown(key)} names no parameter (it has: "
                f"{', '.join(sorted(props))}); name one, or write a JMESPath expression "
                "over the arguments such as items[0].lang"
            )
        return None
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        jmespath.compile(key)
    except JMESPathError as exc:
        msg = str(exc).replace("\n", " ")
        return f"its batch_key {_shown(key)} is not a JMESPath expression: {msg}"
    return None


def batch_problem(
    settings: BatchSettings, input_schema: dict[str, Any] | None = None
) -> str | None:
    """What is wrong with a batch tool's own settings, or None."""
    size = settings.max_batch_size
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_BATCH_SIZE
    ):
        return (
            f"its max_batch_size is {size!r}; it must be a whole number from 1 to {MAX_BATCH_SIZE}"
        )
    sizes = settings.preferred_sizes
    if sizes is not None:
        top = size or MAX_BATCH_SIZE
        if len(sizes) > 16 or any(
            isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= top for n in sizes
        ):
            return (
                f"its preferred_sizes are {sizes!r}; give at most 16 whole numbers from 1 "
                f"to {top} (its max_batch_size)"
            )
    for name, value, low, high, above in (
        ("max_queue_delay_ms", settings.max_queue_delay_ms, 0, MAX_QUEUE_DELAY_MS, False),
        ("target_latency_ms", settings.target_latency_ms, 0, MAX_TARGET_LATENCY_MS, True),
    ):
        if value is not None:
            problem = _number_problem(name, value, low, high, above=above)
            if problem is not None:
                return problem
    priority = settings.priority
    if priority is not None and (
        isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 100
    ):
        return (
            f"its priority is {priority!r}; it must be a whole number from 0 (the highest) to 100"
        )
    return key_problem(settings.batch_key, input_schema)


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
