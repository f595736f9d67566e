"""The call's trace context in the worker: the host's span becomes the tool's parent.

Used only for a ``call`` frame that carries a ``traceparent`` (the host traces): then,
if the plugin's environment has ``opentelemetry-api``, the context is attached while the
tool runs, so the plugin's own spans nest under the host's ``execute_tool`` span. A
worker whose host does not trace never imports this module's OpenTelemetry side.
"""

from __future__ import annotations

from typing import Any

__all__ = ["attach", "detach"]

_otel: Any = None  # (extract, attach, detach) once imported; False when missing


def _load() -> Any:
    global _otel
    if _otel is None:
        try:
            from opentelemetry import context as otel_context
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError:
            _otel = False
        else:
            _otel = (TraceContextTextMapPropagator().extract, otel_context)
    return _otel


def attach(traceparent: str) -> object | None:
    """Make ``traceparent`` the current OpenTelemetry context; a token for :func:`detach`,
    or None when OpenTelemetry is not installed (or the value does not parse)."""
    otel = _load()
    if not otel:
        return None
    extract, otel_context = otel
    token: object = otel_context.attach(extract({"traceparent": traceparent}))
    return token


def detach(token: object | None) -> None:
    if token is not None:
        _otel[1].detach(token)
