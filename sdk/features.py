"""Resources, prompts and completions: what a plugin offers besides tools.

A *resource* is data a client reads by URI (``notes://index``); a *resource template*
names a family of them (``notes://{title}``), its ``{variables}`` passed to the
function as arguments. A *prompt* is a named message template a client fills in with
arguments. A *completion* handler suggests values for one argument of a prompt or one
variable of a template. The descriptors below travel in the worker's Hello; the
functions run in the worker like tools (with a deadline, cancellable), and answer in
MCP's shapes (``resources/read``, ``prompts/get``, ``completion/complete``).

This module is on the worker's start path: msgspec and the standard library only.
"""

from __future__ import annotations

import base64
import inspect
import re
import types
from collections.abc import Callable
from typing import Any

import msgspec

from .content import Block, ToolResult, is_content, to_mcp
from .content import to_wire as content_to_wire
from .errors import InvalidArguments, ToolError
from .schema import Signature, build_signature

__all__ = [
    "MAX_COMPLETIONS",
    "Completion",
    "Message",
    "Prompt",
    "PromptArgument",
    "PromptSpec",
    "Resource",
    "ResourceSpec",
    "TemplateSpec",
    "UriTemplate",
    "completion_result",
    "contents_to_mcp",
    "features_problem",
    "prompt_result",
    "resource_contents",
    "string_arguments",
]

#: Most values one ``completion/complete`` answer carries (MCP's limit).
MAX_COMPLETIONS = 100


class ResourceSpec(msgspec.Struct, frozen=True, omit_defaults=True):
    """One resource as a client sees it; sent in the worker's handshake."""

    uri: str
    name: str
    description: str = ""
    mime_type: str = ""


class TemplateSpec(msgspec.Struct, frozen=True, omit_defaults=True):
    """One resource template (RFC 6570 ``{variable}`` s) as a client sees it."""

    uri_template: str
    name: str
    description: str = ""
    mime_type: str = ""


class PromptArgument(msgspec.Struct, frozen=True, omit_defaults=True):
    """One argument of a prompt."""

    name: str
    description: str = ""
    required: bool = False


class PromptSpec(msgspec.Struct, frozen=True, omit_defaults=True):
    """One prompt as a client sees it; ``input_schema`` is the JSON Schema of its
    arguments, from the function's type hints as for a tool."""

    name: str
    description: str = ""
    arguments: list[PromptArgument] = []
    input_schema: dict[str, Any] = {}


# -- URI templates ------------------------------------------------------------------
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class UriTemplate:
    """A URI template of simple ``{variable}`` s (RFC 6570 level 1): each matches one
    or more characters other than ``/``, ``?`` and ``#``."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.variables: list[str] = _VARIABLE.findall(template)
        if len(set(self.variables)) != len(self.variables):
            raise ValueError(f"URI template {template!r} names a variable twice")
        pattern = ""
        pos = 0
        for m in _VARIABLE.finditer(template):
            pattern += re.escape(template[pos : m.start()]) + f"(?P<{m.group(1)}>[^/?#]+)"
            pos = m.end()
        pattern += re.escape(template[pos:])
        self._regex = re.compile(pattern)

    @staticmethod
    def is_template(uri: str) -> bool:
        return "{" in uri

    def match(self, uri: str) -> dict[str, str] | None:
        """The variables' values when ``uri`` is one of this template's, else None."""
        m = self._regex.fullmatch(uri)
        return None if m is None else m.groupdict()


def _check_uri(uri: str) -> None:
    if not isinstance(uri, str) or "://" not in uri or len(uri) > 1024 or uri != uri.strip():
        raise ValueError(
            f"resource URI {uri!r} must be a URI with a scheme, e.g. 'notes://index' "
            "(at most 1024 characters, no surrounding spaces)"
        )


# -- content -------------------------------------------------------------------------
class Message(msgspec.Struct, frozen=True):
    """One message of a prompt: ``role`` "user" or "assistant", and its content."""

    role: str
    content: str | Block


def _contents(uri: str, value: str | bytes, mime_type: str) -> dict[str, Any]:
    out: dict[str, Any] = {"uri": uri}
    if mime_type:
        out["mimeType"] = mime_type
    if isinstance(value, str):
        out["text"] = value
    else:
        out["blob"] = value  # bytes on the worker's channel; see contents_to_mcp
    return out


def resource_contents(uri: str, value: Any, mime_type: str, where: str) -> dict[str, Any]:
    """A resource function's return value as the worker sends it: MCP's
    ``resources/read`` result, a str as text and bytes (or bytearray, memoryview) as a
    ``blob`` of bytes, which cross the channel as MessagePack binary (a third smaller
    than base64, and not encoded on the worker's loop); :func:`contents_to_mcp` makes
    it base64 on the host's side."""
    if isinstance(value, bytearray | memoryview):
        value = bytes(value)
    if not isinstance(value, str | bytes):
        raise ToolError(
            f"{where} returned a {type(value).__name__}; a resource returns str (text) "
            "or bytes (binary)",
            code="bad_result",
        )
    return {"contents": [_contents(uri, value, mime_type)]}


def contents_to_mcp(result: dict[str, Any]) -> dict[str, Any]:
    """A ``resources/read`` result from a worker with every ``blob`` of bytes encoded as
    base64 text, as MCP writes it (in place; returned)."""
    contents = result.get("contents")
    if isinstance(contents, list):
        for item in contents:
            blob = item.get("blob") if isinstance(item, dict) else None
            if isinstance(blob, bytes | bytearray | memoryview):
                item["blob"] = base64.b64encode(blob).decode("ascii")
    return result


def _content_block(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"type": "text", "text": content}
    if is_content(content) and not isinstance(content, list | ToolResult):
        return to_mcp(content_to_wire(content))[0][0]
    raise ToolError(
        f"{where}: a message's content is a {type(content).__name__}; use a str or one "
        "block of mcphost.sdk.content (Text, Image, Audio, TextResource, BlobResource, "
        "ResourceLink)",
        code="bad_result",
    )


def prompt_result(value: Any, description: str, where: str) -> dict[str, Any]:
    """A prompt function's return value as MCP's ``prompts/get`` result: a str is one
    user message; a Message, or a list of Messages and strs (user messages), as given."""
    items = value if isinstance(value, list | tuple) else [value]
    messages: list[dict[str, Any]] = []
    for item in items:
        msg = item if isinstance(item, Message) else Message("user", item)
        if msg.role not in ("user", "assistant"):
            raise ToolError(
                f"{where}: message role {msg.role!r} must be 'user' or 'assistant'",
                code="bad_result",
            )
        messages.append({"role": msg.role, "content": _content_block(msg.content, where)})
    out: dict[str, Any] = {"messages": messages}
    if description:
        out["description"] = description
    return out


# -- what the plugin registers -------------------------------------------------------
def _kind(fn: Callable[..., Any]) -> str:
    return "async" if inspect.iscoroutinefunction(fn) else "sync"


def _parameters_only(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its return annotation left out: a resource's or prompt's result
    has MCP's shape, not an output schema, so its hint is not read."""
    if not isinstance(fn, types.FunctionType):
        return fn
    shim = types.FunctionType(
        fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )
    shim.__kwdefaults__ = fn.__kwdefaults__
    shim.__annotations__ = {k: v for k, v in fn.__annotations__.items() if k != "return"}
    return shim


class Resource:
    """A resource or resource template: its function and descriptor."""

    def __init__(
        self,
        fn: Callable[..., Any],
        uri: str,
        name: str,
        description: str,
        mime_type: str,
        context_type: type,
    ) -> None:
        _check_uri(uri)
        self.fn = fn
        self.uri = uri
        self.name = name
        self.mime_type = mime_type
        self.kind = _kind(fn)
        self.signature: Signature = build_signature(_parameters_only(fn), name, context_type)
        self.template: UriTemplate | None = None
        params = set(self.signature.args_type.__struct_fields__)
        if UriTemplate.is_template(uri):
            self.template = UriTemplate(uri)
            if set(self.template.variables) != params:
                raise ValueError(
                    f"resource template {uri!r}: its variables {sorted(self.template.variables)} "
                    f"must be exactly the function's parameters {sorted(params)} (besides a "
                    "Context)"
                )
            self.spec: ResourceSpec | TemplateSpec = TemplateSpec(
                uri_template=uri, name=name, description=description, mime_type=mime_type
            )
        else:
            if params:
                raise ValueError(
                    f"resource {uri!r} has no {{variables}}, so its function takes no "
                    f"parameters besides a Context (it has {sorted(params)})"
                )
            self.spec = ResourceSpec(
                uri=uri, name=name, description=description, mime_type=mime_type
            )


class Prompt:
    """A prompt: its function, descriptor and argument validator."""

    def __init__(
        self, fn: Callable[..., Any], name: str, description: str, context_type: type
    ) -> None:
        self.fn = fn
        self.name = name
        self.description = description
        self.kind = _kind(fn)
        self.signature: Signature = build_signature(_parameters_only(fn), name, context_type)
        schema = self.signature.input_schema
        required = set(schema.get("required", []))
        props: dict[str, Any] = schema.get("properties", {})
        args = [
            PromptArgument(
                name=p,
                description=str(props[p].get("description", "")),
                required=p in required,
            )
            for p in props
        ]
        self.spec = PromptSpec(
            name=name, description=description, arguments=args, input_schema=schema
        )


class Completion:
    """A completion handler for argument ``argument`` of prompt or template ``ref``.

    The function takes the partial ``value`` (str), optionally ``arguments`` (a dict of
    the other arguments already given) and a Context; it returns the candidate values.
    """

    def __init__(self, fn: Callable[..., Any], ref: str, argument: str, context_type: type) -> None:
        self.fn = fn
        self.ref = ref
        self.argument = argument
        self.kind = _kind(fn)
        params = inspect.signature(fn).parameters
        hints = {k: v.annotation for k, v in params.items()}
        self.context_param = next(
            (k for k, a in hints.items() if a is context_type or a == context_type.__name__), None
        )
        unknown = set(params) - {"value", "arguments"} - {self.context_param}
        if "value" not in params or unknown:
            raise ValueError(
                f"completion handler for {ref} {argument}: it takes `value` and, if it "
                f"wants them, `arguments` and a Context (it has {sorted(params)})"
            )
        self.wants_arguments = "arguments" in params

    def kwargs(self, value: str, arguments: dict[str, str], ctx: Any) -> dict[str, Any]:
        kw: dict[str, Any] = {"value": value}
        if self.wants_arguments:
            kw["arguments"] = dict(arguments)
        if self.context_param is not None:
            kw[self.context_param] = ctx
        return kw


def completion_result(values: Any, where: str) -> dict[str, Any]:
    """A handler's values as MCP's ``completion/complete`` result (at most 100 of them)."""
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise ToolError(
            f"{where} returned a {type(values).__name__}; return a list of strings",
            code="bad_result",
        )
    strs = [str(v) for v in values]
    shown = strs[:MAX_COMPLETIONS]
    return {"completion": {"values": shown, "total": len(strs), "hasMore": len(strs) > len(shown)}}


def string_arguments(raw: Any, where: str) -> dict[str, str]:
    """A map of string arguments from the client (prompt arguments, completion context)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise InvalidArguments(f"{where}: arguments must be an object of strings")
    return raw


#: Most resources (templates included) and most prompts one plugin may offer.
MAX_RESOURCES = 1000
MAX_PROMPTS = 1000
_PROMPT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def features_problem(
    plugin: str,
    resources: list[ResourceSpec],
    templates: list[TemplateSpec],
    prompts: list[PromptSpec],
) -> str | None:
    """What is wrong with a worker's declared resources and prompts, or None: the host
    checks every handshake, since a worker is plugin code and may send anything."""
    if len(resources) + len(templates) > MAX_RESOURCES:
        return f"it declares more than {MAX_RESOURCES} resources and templates"
    if len(prompts) > MAX_PROMPTS:
        return f"it declares more than {MAX_PROMPTS} prompts"
    seen: set[str] = set()
    for uri in [r.uri for r in resources] + [t.uri_template for t in templates]:
        try:
            _check_uri(uri)
            if UriTemplate.is_template(uri):
                UriTemplate(uri)
        except ValueError as exc:
            return str(exc)
        if uri in seen:
            return f"it declares resource {uri[:80]!r} twice"
        seen.add(uri)
    names: set[str] = set()
    for p in prompts:
        if not _PROMPT_NAME.fullmatch(p.name):
            return f"prompt name {p.name[:80]!r} is not 1-64 letters, digits, '_' or '-'"
        if p.name in names:
            return f"it declares prompt {p.name!r} twice"
        names.add(p.name)
    return None
