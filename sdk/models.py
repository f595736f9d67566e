"""pydantic models as tool parameters and results, without importing pydantic.

A plugin that types a parameter ``spec: FilterSpec`` with a pydantic ``BaseModel`` gets
the model's own JSON Schema (``model_json_schema``, through a ``TypeAdapter`` so that
``list[Model]``, ``dict[str, Model]`` and ``Model | None`` work too), validation by the
model, and results dumped in JSON mode. pydantic is looked up in ``sys.modules`` only: a
plugin that never imported it cannot be using its models, so a worker for it never
loads pydantic (importing it costs more than a worker's whole start).
"""

from __future__ import annotations

import sys
from typing import Any, get_args

from .errors import InvalidArguments

__all__ = ["ModelParams", "dump_model", "has_model", "model_schema"]


def _base_model() -> type | None:
    module = sys.modules.get("pydantic")
    base = getattr(module, "BaseModel", None)
    return base if isinstance(base, type) else None


def has_model(tp: Any) -> bool:
    """Whether the type hint ``tp`` is, or holds, a pydantic model class."""
    base = _base_model()
    return base is not None and _holds(tp, base)


def _holds(tp: Any, base: type) -> bool:
    if isinstance(tp, type) and issubclass(tp, base):
        return True
    return any(_holds(arg, base) for arg in get_args(tp))


def _adapter(tp: Any) -> Any:
    from pydantic import TypeAdapter  # loaded already: the plugin's types use it

    return TypeAdapter(tp)


def model_schema(tp: Any, mode: str) -> dict[str, Any]:
    """The JSON Schema of ``tp`` (``mode`` "validation" or "serialization"), with its
    definitions under ``$defs`` and references to them as ``#/$defs/<name>``."""
    schema: dict[str, Any] = _adapter(tp).json_schema(mode=mode, ref_template="#/$defs/{model}")
    return schema


def dump_model(value: Any) -> Any:
    """``msgspec``'s ``enc_hook`` for results: a pydantic model as JSON-mode data."""
    base = _base_model()
    if base is not None and isinstance(value, base):
        return value.model_dump(mode="json")  # type: ignore[attr-defined]
    raise TypeError(f"Encoding objects of type {type(value).__name__} is unsupported")


class ModelParams:
    """The parameters of one tool whose types hold pydantic models, validated by pydantic."""

    def __init__(self, hints: dict[str, Any]) -> None:
        self.adapters = {name: _adapter(tp) for name, tp in hints.items()}

    def dump(self, name: str, value: Any) -> Any:
        """A value of parameter ``name`` as JSON data (for its default in the schema)."""
        return self.adapters[name].dump_python(value, mode="json")

    def validate(
        self,
        kwargs: dict[str, Any],
        skip: dict[str, Any],
        see: str = "see the tool's input schema (`mcphost tools --json`)",
    ) -> None:
        """Replace each model parameter's JSON value in ``kwargs`` by the validated value;
        a value that ``is`` its entry in ``skip`` (the parameter's default) stays. An
        invalid one's message ends with ``see`` (where to look for what is expected)."""
        from pydantic import ValidationError

        problems: list[str] = []
        for name, adapter in self.adapters.items():
            if name in skip and kwargs[name] is skip[name]:
                continue
            try:
                kwargs[name] = adapter.validate_python(kwargs[name])
            except ValidationError as exc:
                problems.extend(_describe(name, err) for err in exc.errors(include_url=False))
        if problems:
            detail = "; ".join(problems)
            raise InvalidArguments(
                f"invalid arguments: {detail}; {see}",
                data={"detail": detail},
            )


def _describe(param: str, err: Any) -> str:
    """One pydantic error in the words msgspec uses: the message, then where it is."""
    path = "$." + param
    for part in err.get("loc", ()):
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return f"{err.get('msg', 'invalid value')} - at `{path}`"
