"""Traces of calls with OpenTelemetry: one ``execute_tool <plugin>.<tool>`` span a call.

Switched on by the standard environment (``OTEL_TRACES_EXPORTER`` set to an exporter,
``OTEL_SDK_DISABLED`` not ``true``) with the ``otel`` extra installed, or by
``Host(tracing=True)`` in an application that set up OpenTelemetry itself. Off, this
module imports nothing of OpenTelemetry and the host pays one attribute test a call.

The span follows the OpenTelemetry GenAI and MCP semantic conventions: its parent is the
current context (for an MCP request, the ``traceparent`` in its ``params._meta``), its
attributes ``gen_ai.operation.name`` = ``execute_tool``, ``gen_ai.tool.name``, and for
an MCP request ``mcp.method.name``, ``mcp.session.id``, ``mcp.protocol.version`` and
``jsonrpc.request.id``; a failed call sets ``error.type`` to the stable error code and
the span's status to ERROR. The worker receives the span's ``traceparent`` in the
``call`` frame, so a plugin's own spans nest under the call.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import logging
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcphost.host.host import Host

__all__ = ["Tracing", "enabled_by_env", "from_env", "mcp_request"]

log = logging.getLogger("mcphost.tracing")

EXPORTER_GROUP = "opentelemetry_traces_exporter"

#: Attributes of the MCP request a call serves (set by :func:`mcp_request`).
_request_attrs: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "mcphost_mcp_request", default=None
)


def enabled_by_env(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces: an exporter named, the SDK not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    return bool(exporters) and exporters != "none"


def from_env(environ: Mapping[str, str] = os.environ) -> Tracing | None:
    """A :class:`Tracing` when the environment asks for traces and the ``otel`` extra is
    installed (else None, and nothing of OpenTelemetry is imported)."""
    if not enabled_by_env(environ):
        return None
    if importlib.util.find_spec("opentelemetry") is None or (
        importlib.util.find_spec("opentelemetry.sdk") is None
    ):
        log.warning(
            "OTEL_TRACES_EXPORTER is set but OpenTelemetry is not installed: calls are not "
            "traced; install it with `pip install 'mcphost[otel]'`"
        )
        return None
    return Tracing(_provider_from_env(environ))


def _provider_from_env(environ: Mapping[str, str]) -> Any:
    """The global tracer provider if the process has set one up (e.g. under
    ``opentelemetry-instrument``), else a new SDK provider exporting to the exporters
    ``OTEL_TRACES_EXPORTER`` names (installed as the global provider)."""
    from importlib.metadata import entry_points

    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "mcphost"}))
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
    known = {ep.name: ep for ep in entry_points(group=EXPORTER_GROUP)}
    for name in environ.get("OTEL_TRACES_EXPORTER", "").split(","):
        name = name.strip().lower()
        if not name or name == "none":
            continue
        ep = known.get(name)
        if ep is None:
            log.warning(
                "OTEL_TRACES_EXPORTER names %r, which is not installed (installed: %s); "
                "spans go to the other exporters named",
                name,
                ", ".join(sorted(known)) or "none",
            )
            continue
        # Each exporter reads its own OTEL_EXPORTER_* settings (endpoint, headers, ...).
        provider.add_span_processor(BatchSpanProcessor(ep.load()()))
    trace.set_tracer_provider(provider)
    return trace.get_tracer_provider()


@contextlib.contextmanager
def mcp_request(
    meta: Any,
    *,
    method: str,
    request_id: Any,
    session_id: str | None,
    protocol_version: str | None,
) -> Iterator[None]:
    """While serving one MCP request: its ``_meta`` trace context (W3C ``traceparent``
    and ``tracestate``) is the current context and its attributes reach the call's span."""
    from opentelemetry import context as otel_context
    from opentelemetry.propagate import extract

    carrier = {}
    if isinstance(meta, dict):
        carrier = {k: v for k, v in meta.items() if k in ("traceparent", "tracestate")}
        carrier = {k: v for k, v in carrier.items() if isinstance(v, str)}
    attrs: dict[str, Any] = {"mcp.method.name": method, "jsonrpc.request.id": str(request_id)}
    if session_id:
        attrs["mcp.session.id"] = session_id
    if protocol_version:
        attrs["mcp.protocol.version"] = protocol_version
    token = otel_context.attach(extract(carrier)) if carrier else None
    reset = _request_attrs.set(attrs)
    try:
        yield
    finally:
        _request_attrs.reset(reset)
        if token is not None:
            otel_context.detach(token)


class Tracing:
    """Starts the spans of one host's calls with ``provider``'s tracer."""

    def __init__(self, provider: Any = None) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        provider = provider if provider is not None else trace.get_tracer_provider()
        self.provider = provider
        self._tracer = provider.get_tracer("mcphost")
        self._use_span = trace.use_span
        self._kinds = (SpanKind.INTERNAL, SpanKind.SERVER)
        self._error = (Status, StatusCode.ERROR)
        self._inject = TraceContextTextMapPropagator().inject
        self._set_span = trace.set_span_in_context

    def _start(self, name: str) -> Any:
        plugin = name.partition(".")[0]
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "mcphost.plugin": plugin,
        }
        request = _request_attrs.get()
        if request is not None:
            attrs.update(request)
        kind = self._kinds[request is not None]
        return self._tracer.start_span(f"execute_tool {name}", kind=kind, attributes=attrs)

    def _traceparent(self, span: Any) -> str:
        carrier: dict[str, str] = {}
        self._inject(carrier, context=self._set_span(span))
        return carrier.get("traceparent", "")

    def _failed(self, span: Any, exc: BaseException) -> None:
        code = getattr(exc, "code", None)
        error_type = code if isinstance(code, str) else type(exc).__qualname__
        span.set_attribute("error.type", error_type)
        status, error = self._error
        span.set_status(status(error, str(getattr(exc, "message", exc))[:200]))

    async def call(self, host: Host, name: str, args: Any, **kwargs: Any) -> Any:
        """``host.call`` inside a span (current while it runs)."""
        span = self._start(name)
        try:
            with self._use_span(span, end_on_exit=False):
                return await host.call(name, args, traceparent=self._traceparent(span), **kwargs)
        except BaseException as exc:
            self._failed(span, exc)
            raise
        finally:
            span.end()

    async def stream(self, host: Host, name: str, args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """``host.stream`` inside a span from the first item to the last."""
        span = self._start(name)
        try:
            async for item in host.stream(
                name, args, traceparent=self._traceparent(span), **kwargs
            ):
                yield item
        except GeneratorExit:  # the caller stopped reading: not a failure
            raise
        except BaseException as exc:
            self._failed(span, exc)
            raise
        finally:
            span.end()

    def flush(self) -> None:
        flush = getattr(self.provider, "force_flush", None)
        if flush is not None:
            flush()
