"""The :class:`Plugin` object a plugin's entry point names, and its :class:`Tool` s."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any, TypeVar, overload

from .context import Context
from .features import Completion, Prompt, PromptSpec, Resource, ResourceSpec, TemplateSpec
from .schema import BatchSettings, Signature, ToolSpec, build_signature
from .tool_rules import MAX_TOOLS, tool_problem

__all__ = ["ENTRY_POINT_GROUP", "Plugin", "Tool"]

#: The entry-point group a plugin's distribution names its :class:`Plugin` object in;
#: the host discovers plugins and the registry checks wheels by this one name.
ENTRY_POINT_GROUP = "mcphost.plugins"

F = TypeVar("F", bound=Callable[..., Any])

# MCP tool names allow [A-Za-z0-9_.-]; the host joins plugin and tool with a dot, so
# neither part may contain one.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Tool:
    """One tool: the function, its kind, its schema and its argument validator."""

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        description: str,
        batch: bool,
        batching: BatchSettings | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.batch = batch
        if inspect.isasyncgenfunction(fn):
            self.kind = "async_gen"
        elif inspect.isgeneratorfunction(fn):
            self.kind = "sync_gen"
        elif inspect.iscoroutinefunction(fn):
            self.kind = "async"
        else:
            self.kind = "sync"
        self.signature: Signature = build_signature(fn, name, Context)
        self.spec = ToolSpec(
            name=name,
            description=description,
            input_schema=self.signature.input_schema,
            output_schema=self.signature.output_schema,
            kind="stream" if self.is_stream else "call",
            batch=batch,
            batching=batching,
        )

    @property
    def is_stream(self) -> bool:
        return self.kind in ("sync_gen", "async_gen")

    def bind(self, args: dict[str, Any] | None, ctx: Context) -> dict[str, Any]:
        """Validate arguments and add the context where the function asks for it."""
        kwargs = self.signature.bind(f"{ctx.plugin}.{self.name}", args)
        if self.signature.context_param is not None:
            kwargs[self.signature.context_param] = ctx
        return kwargs


class Plugin:
    """A named set of tools. A distribution's ``mcphost.plugins`` entry point names one.

    >>> plugin = Plugin("textkit")
    >>> @plugin.tool
    ... def upper(text: str) -> str:
    ...     '''Upper-case the text.'''
    ...     return text.upper()
    """

    def __init__(self, name: str, *, description: str = "") -> None:
        if not _NAME.match(name):
            raise ValueError(
                f"plugin name {name!r} must be 1-64 characters of letters, digits, '_' or '-'"
            )
        self.name = name
        self.description = description
        self.tools: dict[str, Tool] = {}
        #: Resources and resource templates by URI (template) string.
        self.resources: dict[str, Resource] = {}
        self.prompts: dict[str, Prompt] = {}
        #: Completion handlers by (prompt name or URI template, argument).
        self.completions: dict[tuple[str, str], Completion] = {}

    @overload
    def tool(self, fn: F) -> F: ...

    @overload
    def tool(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        batch: bool = False,
        max_batch_size: int | None = None,
        preferred_sizes: list[int] | None = None,
        max_queue_delay_ms: float | None = None,
        target_latency_ms: float | None = None,
        batch_key: str = "",
        priority: int | None = None,
    ) -> Callable[[F], F]: ...

    def tool(
        self,
        fn: F | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        batch: bool = False,
        max_batch_size: int | None = None,
        preferred_sizes: list[int] | None = None,
        max_queue_delay_ms: float | None = None,
        target_latency_ms: float | None = None,
        batch_key: str = "",
        priority: int | None = None,
    ) -> F | Callable[[F], F]:
        """Register a function as a tool; use bare or with options.

        ``batch=True`` marks a tool whose function takes a list of items and returns a
        list of results of the same length, so the host may coalesce calls. A batch
        tool may set its own batching (each left out takes the host's ``[batching]``
        value, and the operator's per-tool settings win over these):
        ``max_batch_size``, ``preferred_sizes``, ``max_queue_delay_ms``,
        ``target_latency_ms``, ``batch_key`` (an argument's name or a JMESPath
        expression over the arguments: only calls with the same key share a batch, and
        a key keeps to one replica) and ``priority`` (of calls that name none; 0 is the
        highest, up to 100). See docs/batching.md.
        """
        batching: BatchSettings | None = None
        if (
            any(
                v is not None
                for v in (
                    max_batch_size,
                    preferred_sizes,
                    max_queue_delay_ms,
                    target_latency_ms,
                    priority,
                )
            )
            or batch_key
        ):
            batching = BatchSettings(
                max_batch_size=max_batch_size,
                preferred_sizes=None if preferred_sizes is None else list(preferred_sizes),
                max_queue_delay_ms=max_queue_delay_ms,
                target_latency_ms=target_latency_ms,
                batch_key=batch_key,
                priority=priority,
            )

        def register(f: F) -> F:
            tool_name = name or f.__name__
            if not _NAME.match(tool_name):
                raise ValueError(
                    f"tool name {tool_name!r} must be 1-64 letters, digits, '_' or '-'"
                )
            if tool_name in self.tools:
                raise ValueError(f"plugin {self.name} already has a tool {tool_name!r}")
            if len(self.tools) >= MAX_TOOLS:
                raise ValueError(f"plugin {self.name} has {MAX_TOOLS} tools, the most it may")
            doc = description if description is not None else inspect.getdoc(f) or ""
            tool = Tool(f, tool_name, doc.strip(), batch, batching)
            # The host checks the same rules at every worker's handshake.
            problem = tool_problem(self.name, tool.spec)
            if problem is not None:
                raise ValueError(f"plugin {self.name}: {problem}")
            self.tools[tool_name] = tool
            return f

        if fn is not None:
            return register(fn)
        return register

    def specs(self) -> list[ToolSpec]:
        """The descriptors of every tool, as sent in the worker's handshake."""
        return [t.spec for t in self.tools.values()]

    # -- resources, prompts, completions (see mcphost.sdk.features) ------------------
    def resource(
        self,
        uri: str,
        *,
        name: str | None = None,
        description: str | None = None,
        mime_type: str = "text/plain",
    ) -> Callable[[F], F]:
        """Register a function as the resource at ``uri``, or as a resource template
        when ``uri`` has ``{variables}`` (each one a parameter of the function). It
        returns str (text) or bytes (sent base64 as a blob)."""

        def register(f: F) -> F:
            if uri in self.resources:
                raise ValueError(f"plugin {self.name} already has a resource {uri!r}")
            doc = description if description is not None else inspect.getdoc(f) or ""
            res = Resource(f, uri, name or f.__name__, doc.strip(), mime_type, Context)
            self.resources[uri] = res
            return f

        return register

    @overload
    def prompt(self, fn: F) -> F: ...

    @overload
    def prompt(
        self, *, name: str | None = None, description: str | None = None
    ) -> Callable[[F], F]: ...

    def prompt(
        self, fn: F | None = None, *, name: str | None = None, description: str | None = None
    ) -> F | Callable[[F], F]:
        """Register a function as a prompt; its typed parameters are the prompt's
        arguments. It returns a str (one user message), a Message, or a list of them."""

        def register(f: F) -> F:
            prompt_name = name or f.__name__
            if not _NAME.match(prompt_name):
                raise ValueError(
                    f"prompt name {prompt_name!r} must be 1-64 letters, digits, '_' or '-'"
                )
            if prompt_name in self.prompts:
                raise ValueError(f"plugin {self.name} already has a prompt {prompt_name!r}")
            doc = description if description is not None else inspect.getdoc(f) or ""
            self.prompts[prompt_name] = Prompt(f, prompt_name, doc.strip(), Context)
            return f

        if fn is not None:
            return register(fn)
        return register

    def completion(self, ref: str, argument: str) -> Callable[[F], F]:
        """Register a function that completes ``argument`` of prompt ``ref`` (its name
        as registered here) or of resource template ``ref`` (its URI template)."""

        def register(f: F) -> F:
            key = (ref, argument)
            if key in self.completions:
                raise ValueError(f"plugin {self.name} already completes {argument!r} of {ref!r}")
            self.completions[key] = Completion(f, ref, argument, Context)
            return f

        return register

    def resource_specs(self) -> list[ResourceSpec]:
        return [r.spec for r in self.resources.values() if isinstance(r.spec, ResourceSpec)]

    def template_specs(self) -> list[TemplateSpec]:
        return [r.spec for r in self.resources.values() if isinstance(r.spec, TemplateSpec)]

    def prompt_specs(self) -> list[PromptSpec]:
        return [p.spec for p in self.prompts.values()]
