"""Turn a typed Python function into a tool: JSON Schemas and argument validation.

msgspec builds both the schema and the validator from the same type hints, so what a
client is told and what the worker enforces cannot drift apart. msgspec is used rather
than pydantic here because this code runs at every worker start: importing pydantic
costs more than the whole cold-start budget. Parameters and results typed with a
plugin's own pydantic models are the exception: the models give their schema and
validate their values (:mod:`.models`), and pydantic is then loaded already.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, get_args, get_origin

import msgspec

from .content import output_type
from .errors import InvalidArguments
from .models import ModelParams, has_model, model_schema

__all__ = ["BatchSettings", "ToolSpec", "build_signature"]


class BatchSettings(msgspec.Struct, frozen=True, omit_defaults=True):
    """A batch tool's own batching settings, from its decorator (each left out: the
    host's ``[batching]`` value; the operator's ``[batching.tools."P.T"]`` wins over
    both). See docs/batching.md."""

    #: Items one batch call carries at most.
    max_batch_size: int | None = None
    #: Batch sizes to prefer when more calls wait than one batch takes.
    preferred_sizes: list[int] | None = None
    #: Milliseconds a queued call waits for others while batches of the tool run.
    max_queue_delay_ms: float | None = None
    #: Milliseconds a batch should take; sizes adapt to keep it.
    target_latency_ms: float | None = None
    #: Only calls with the same key share a batch, and a key keeps to one replica: an
    #: argument's name or a JMESPath expression over the arguments ("": none).
    batch_key: str = ""
    #: The priority of a call that names none (0 the highest, up to 100).
    priority: int | None = None


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
    #: A batch tool's own batching settings (None: the host's).
    batching: BatchSettings | None = None


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
        models: ModelParams | None = None,
        model_defaults: dict[str, Any] | None = None,
    ) -> None:
        self.args_type = args_type
        self.context_param = context_param
        self.input_schema = input_schema
        self.output_schema = output_schema
        self._decoder_fields = args_type.__struct_fields__
        #: Parameters whose types hold pydantic models: the Struct takes any JSON value
        #: for them (UNSET when left out) and pydantic validates it.
        self.models = models
        self._model_defaults = model_defaults or {}

    def bind(
        self, tool: str, args: dict[str, Any] | None, *, see: str | None = None
    ) -> dict[str, Any]:
        """Validate ``args`` and return keyword arguments for the function; ``see`` is
        where an invalid argument's message sends the caller (a tool's input schema by
        default; a prompt's or a resource template's own place for those)."""
        see = _SEE_SCHEMA if see is None else see
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
                f"invalid arguments: {exc}; {see}",
                data={"tool": tool, "detail": str(exc)},
            ) from None
        kwargs = {f: getattr(value, f) for f in self._decoder_fields}
        if self.models is not None:
            for name, default in self._model_defaults.items():
                if kwargs[name] is msgspec.UNSET:
                    kwargs[name] = default
            try:
                self.models.validate(kwargs, skip=self._model_defaults, see=see)
            except InvalidArguments as exc:
                exc.data["tool"] = tool
                raise
        return kwargs


_SEE_SCHEMA = "see the tool's input schema (`mcphost tools --json`)"


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
    # Parameters typed with pydantic models: any JSON value here, pydantic validates it.
    model_hints = {f[0]: f[1] for f in fields if has_model(f[1])}
    model_defaults = {f[0]: f[2] for f in fields if f[0] in model_hints and len(f) == 3}
    fields = [
        (f[0], Any, msgspec.UNSET)
        if f[0] in model_defaults
        else (f[0], Any)
        if f[0] in model_hints
        else f
        for f in fields
    ]
    try:
        args_type = msgspec.defstruct(struct_name, fields, kw_only=True, forbid_unknown_fields=True)
        input_schema = _schema_for(args_type)
    except (TypeError, msgspec.ValidationError) as exc:
        raise TypeError(
            f"tool {tool_name}: unsupported parameter type: {_unsupported(exc)}; {_SUPPORTED}"
        ) from exc
    input_schema.pop("title", None)
    if not input_schema.get("required", True):  # every parameter has a default
        del input_schema["required"]
    input_schema["additionalProperties"] = False
    models: ModelParams | None = None
    if model_hints:
        models = ModelParams(model_hints)
        for name, hint in model_hints.items():
            prop = _merge_defs(input_schema, model_schema(hint, "validation"), tool_name)
            if name in model_defaults:
                prop["default"] = models.dump(name, model_defaults[name])
            input_schema["properties"][name] = prop
    output_schema: dict[str, Any] | None = None
    ret = hints.get("return", inspect.Signature.empty)
    if ret not in (inspect.Signature.empty, None, type(None), Any):
        if get_origin(ret) in _GENERATOR_ORIGINS:
            args = get_args(ret)
            ret = args[0] if args else Any
        is_content, structured = output_type(ret)
        if is_content:
            ret = Any if structured is None else structured
        if ret is not Any:
            try:
                output_schema = (
                    model_schema(ret, "serialization") if has_model(ret) else _schema_for(ret)
                )
            except TypeError as exc:
                raise TypeError(
                    f"tool {tool_name}: unsupported return type: {_unsupported(exc)}; {_SUPPORTED}"
                ) from exc
    return Signature(args_type, context_param, input_schema, output_schema, models, model_defaults)


_SUPPORTED = (
    "use str, int, float, bool, None, lists, dicts, Literal, enums, dataclasses, "
    "TypedDicts, msgspec Structs or pydantic models"
)


def _unsupported(exc: Exception) -> str:
    """msgspec's complaint without its advice for msgspec's own API (``schema_hook``),
    which a tool cannot pass."""
    return str(exc).strip().splitlines()[-1]


def _merge_defs(root: dict[str, Any], schema: dict[str, Any], tool_name: str) -> dict[str, Any]:
    """Move ``schema``'s ``$defs`` into ``root``'s (where ``#/$defs/..`` points); return
    what is left of ``schema``."""
    schema = dict(schema)
    defs = schema.pop("$defs", {})
    into = root.setdefault("$defs", {})
    for name, definition in defs.items():
        if into.get(name, definition) != definition:
            raise TypeError(
                f"tool {tool_name}: two different types are both named {name!r} in its "
                "parameters; rename one of them"
            )
        into[name] = definition
    if not into:
        root.pop("$defs")
    return schema
