"""Turn a typed Python function into a tool: JSON Schemas and argument validation.

msgspec builds both the schema and the validator from the same type hints, so what a
client is told and what the worker enforces cannot drift apart. msgspec is used rather
than pydantic here because this code runs at every worker start: importing pydantic
costs more than the whole cold-start budget.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, get_args, get_origin

import msgspec

from .errors import InvalidArguments

__all__ = ["ToolSpec", "build_signature"]


class ToolSpec(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a client sees of one tool; sent by the worker in its handshake."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = {}
    output_schema: dict[str, Any] | None = None
    #: "call" for a function that returns once, "stream" for a generator.
    kind: str = "call"
    #: True when the tool takes a list of items and returns a list of results.
    batch: bool = False


_GENERATOR_ORIGINS = {
    Iterator,
    AsyncIterator,
    typing.Iterator,
    typing.AsyncIterator,
    typing.Generator,
    typing.AsyncGenerator,
}


def _schema_for(tp: Any) -> dict[str, Any]:
    (schema,), components = msgspec.json.schema_components([tp], ref_template="#/$defs/{name}")
    if "$ref" in schema and len(schema) == 1:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = components.pop(name)
    if components:
        schema["$defs"] = components
    return schema


class Signature:
    """A tool function's parameters as a msgspec Struct, plus its context parameter."""

    def __init__(
        self,
        args_type: type[msgspec.Struct],
        context_param: str | None,
        input_schema: dict[str, Any],
        output_schema: dict[str, Any] | None,
    ) -> None:
        self.args_type = args_type
        self.context_param = context_param
        self.input_schema = input_schema
        self.output_schema = output_schema
        self._decoder_fields = args_type.__struct_fields__

    def bind(self, tool: str, args: dict[str, Any] | None) -> dict[str, Any]:
        """Validate ``args`` and return keyword arguments for the function."""
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise InvalidArguments(
                f"arguments must be a JSON object, got {type(args).__name__}; "
                'pass them as {"name": value}',
                data={"tool": tool},
            )
        try:
            value = msgspec.convert(args, self.args_type, strict=False)
        except msgspec.ValidationError as exc:
            raise InvalidArguments(
                f"invalid arguments: {exc}; see the tool's input schema "
                "(`mcphost tools --json`)",
                data={"tool": tool, "detail": str(exc)},
            ) from None
        return {f: getattr(value, f) for f in self._decoder_fields}


def build_signature(fn: Callable[..., Any], tool_name: str, context_type: type) -> Signature:
    """Inspect ``fn``'s type hints and build its argument Struct and schemas."""
    hints = typing.get_type_hints(fn, include_extras=True)
    sig = inspect.signature(fn)
    fields: list[tuple[Any, ...]] = []
    context_param: str | None = None
    for pname, param in sig.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {tool_name}: *args and **kwargs are not supported")
        hint = hints.get(pname, Any)
        if hint is context_type:
            context_param = pname
            continue
        if param.default is inspect.Parameter.empty:
            fields.append((pname, hint))
        else:
            fields.append((pname, hint, param.default))
    struct_name = "".join(p.capitalize() for p in tool_name.replace(".", "_").split("_")) + "Args"
    try:
        args_type = msgspec.defstruct(struct_name, fields, kw_only=True, forbid_unknown_fields=True)
        input_schema = _schema_for(args_type)
    except (TypeError, msgspec.ValidationError) as exc:
        raise TypeError(f"tool {tool_name}: unsupported parameter type: {exc}") from exc
    input_schema.pop("title", None)
    input_schema["additionalProperties"] = False
    output_schema: dict[str, Any] | None = None
    ret = hints.get("return", inspect.Signature.empty)
    if ret not in (inspect.Signature.empty, None, type(None), Any):
        if get_origin(ret) in _GENERATOR_ORIGINS:
            args = get_args(ret)
            ret = args[0] if args else Any
        if ret is not Any:
            try:
                output_schema = _schema_for(ret)
            except TypeError as exc:
                raise TypeError(f"tool {tool_name}: unsupported return type: {exc}") from exc
    return Signature(args_type, context_param, input_schema, output_schema)
