"""What a tool may ask its MCP client: a model's completion (sampling) or the user's
input (elicitation). :class:`~mcphost.sdk.context.Context` sends the asks; this module
builds their MCP parameters and reads the answers, with no I/O.

Sampling parameters are those of MCP's ``sampling/createMessage``; elicitation's
``requestedSchema`` is a flat object of strings, numbers, booleans and enums, made here
from a dict (taken as it is) or from a class (a dataclass, TypedDict, msgspec Struct or
pydantic model), whose field defaults and enum choices go into the schema and whose
instance the accepted answer becomes.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .content import Audio, Image, Text

__all__ = ["Elicited", "Sampled", "elicit_params", "elicited", "sample_params", "sampled"]


class Sampled(msgspec.Struct, frozen=True):
    """The client's answer to :meth:`Context.sample`: the message its model wrote."""

    role: str
    #: The MCP content block(s) of the message, as sent (images and audio in base64).
    content: Any
    #: The model that wrote it, as the client names it.
    model: str = ""
    stop_reason: str | None = None

    @property
    def text(self) -> str:
        """The message's text (the text blocks joined; "" when it has none)."""
        blocks = self.content if isinstance(self.content, list) else [self.content]
        return "".join(
            b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text"
        )


class Elicited(msgspec.Struct, frozen=True):
    """The user's answer to :meth:`Context.elicit`: ``action`` is "accept", "decline" or
    "cancel"; ``content`` (accepted only) is a dict, or an instance of the class the
    schema was made from."""

    action: str
    content: Any = None

    @property
    def accepted(self) -> bool:
        return self.action == "accept"


def _block(value: Any) -> dict[str, Any]:
    import base64

    if isinstance(value, str):
        return {"type": "text", "text": value}
    if isinstance(value, Text):
        return {"type": "text", "text": value.text}
    if isinstance(value, (Image, Audio)):
        return {
            "type": "image" if isinstance(value, Image) else "audio",
            "data": base64.b64encode(value.data).decode("ascii"),
            "mimeType": value.mime_type,
        }
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return value
    raise TypeError(
        "a sampling message's content must be a str, Text, Image, Audio or an MCP content "
        f"block dict, not {type(value).__name__}"
    )


def _message(m: Any) -> dict[str, Any]:
    if isinstance(m, (str, Text, Image, Audio)):
        return {"role": "user", "content": _block(m)}
    if isinstance(m, tuple) and len(m) == 2:
        m = {"role": m[0], "content": m[1]}
    if isinstance(m, dict):
        role = m.get("role")
        if role not in ("user", "assistant"):
            raise ValueError(
                f"a sampling message's role must be 'user' or 'assistant', not {role!r}"
            )
        content = m.get("content")
        blocks = [_block(c) for c in content] if isinstance(content, list) else _block(content)
        return {"role": role, "content": blocks}
    raise TypeError(
        "sampling messages are a str (one user message) or a list of str, (role, content) "
        f"pairs or {{'role', 'content'}} dicts, not {type(m).__name__}"
    )


def sample_params(
    messages: Any,
    *,
    max_tokens: int,
    system_prompt: str | None = None,
    temperature: float | None = None,
    stop_sequences: list[str] | None = None,
    model_preferences: dict[str, Any] | None = None,
    include_context: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The params of a ``sampling/createMessage`` request."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(
            f"max_tokens must be a whole number of tokens, at least 1, not {max_tokens!r}"
        )
    items = [messages] if isinstance(messages, (str, Text, Image, Audio, dict)) else list(messages)
    if not items:
        raise ValueError("sample() needs at least one message")
    params: dict[str, Any] = {"messages": [_message(m) for m in items], "maxTokens": max_tokens}
    if include_context is not None and include_context not in ("none", "thisServer", "allServers"):
        raise ValueError(
            f"include_context must be 'none', 'thisServer' or 'allServers', not {include_context!r}"
        )
    for key, value in (
        ("systemPrompt", system_prompt),
        ("temperature", temperature),
        ("stopSequences", stop_sequences),
        ("modelPreferences", model_preferences),
        ("includeContext", include_context),
        ("metadata", metadata),
    ):
        if value is not None:
            params[key] = value
    return params


def sampled(value: Any) -> Sampled:
    """The client's ``CreateMessageResult`` as a :class:`Sampled`."""
    if not isinstance(value, dict):
        value = {}
    return Sampled(
        role=str(value.get("role", "assistant")),
        content=value.get("content"),
        model=str(value.get("model", "")),
        stop_reason=value.get("stopReason"),
    )


_PRIMITIVES = {"string", "number", "integer", "boolean"}


def _flat(prop: dict[str, Any], defs: dict[str, Any], where: str) -> dict[str, Any]:
    """One property of an elicitation schema, its ``$ref`` (an enum) inlined and an
    optional type (``T | None``) reduced to ``T``."""
    if "$ref" in prop:
        target = defs.get(prop["$ref"].rsplit("/", 1)[-1], {})
        prop = {**target, **{k: v for k, v in prop.items() if k != "$ref"}}
    options = prop.get("anyOf")
    if isinstance(options, list):
        rest = [o for o in options if o.get("type") != "null"]
        if len(rest) == 1:
            base = {k: v for k, v in prop.items() if k != "anyOf"}
            prop = {**_flat(rest[0], defs, where), **base}
    prop = {k: v for k, v in prop.items() if k != "title" or isinstance(v, str)}
    if "enum" in prop and "type" not in prop and all(isinstance(v, str) for v in prop["enum"]):
        prop["type"] = "string"
    if prop.get("type") not in _PRIMITIVES:
        raise TypeError(
            f"elicitation field {where!r} must be a string, number, integer, boolean or "
            f"enum (MCP asks users only for flat forms), not {prop.get('type') or prop}"
        )
    return prop


def elicit_params(message: str, schema: Any) -> tuple[dict[str, Any], Any]:
    """The params of an ``elicitation/create`` request, and the class to turn an
    accepted answer into (None for a dict schema)."""
    if not isinstance(message, str) or not message:
        raise ValueError("elicit() needs a message telling the user what to enter")
    tp: Any = None
    if isinstance(schema, dict):
        requested = dict(schema)
        requested.setdefault("type", "object")
        if requested["type"] != "object" or not isinstance(requested.get("properties"), dict):
            raise TypeError(
                "an elicitation schema is a JSON Schema object with 'properties', e.g. "
                '{"type": "object", "properties": {"name": {"type": "string"}}}'
            )
    else:
        tp = schema
        raw = _class_schema(schema)
        defs = raw.get("$defs", {})
        if "$ref" in raw:
            raw = defs[raw["$ref"].rsplit("/", 1)[-1]]
        if raw.get("type") != "object":
            raise TypeError(
                f"elicit() takes a dict schema or a class with fields (dataclass, TypedDict, "
                f"msgspec Struct, pydantic model), not {schema!r}"
            )
        requested = {"type": "object", "properties": {}}
        for name, prop in raw.get("properties", {}).items():
            requested["properties"][name] = _flat(prop, defs, name)
        if raw.get("required"):
            requested["required"] = list(raw["required"])
    return {"mode": "form", "message": message, "requestedSchema": requested}, tp


def _class_schema(tp: Any) -> dict[str, Any]:
    from .models import has_model, model_schema

    if has_model(tp):
        return model_schema(tp, "validation")
    try:
        return msgspec.json.schema(tp)
    except TypeError as exc:
        raise TypeError(f"elicit(): cannot make a form from {tp!r}: {exc}") from None


def elicited(value: Any, tp: Any) -> Elicited:
    """The client's ``ElicitResult`` as an :class:`Elicited`; accepted content becomes an
    instance of ``tp`` when the schema was a class."""
    if not isinstance(value, dict):
        value = {}
    action = str(value.get("action", "cancel"))
    content = value.get("content")
    if action == "accept" and tp is not None and content is not None:
        from .models import has_model

        if has_model(tp):
            from pydantic import TypeAdapter

            content = TypeAdapter(tp).validate_python(content)
        else:
            content = msgspec.convert(content, tp, strict=False)
    return Elicited(action=action, content=content if action == "accept" else None)
