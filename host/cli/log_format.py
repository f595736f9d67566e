"""``--log-format json``: one JSON object per line on stderr, for log collectors.

Each line has ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``; a
plugin's line also ``plugin``, ``tool`` and ``call_id`` (the worker's id of the call
that wrote it, 0 outside any call), and ``trace_id`` when the call is traced (a line
the host writes inside a traced call has it too). A failure's traceback is ``exc``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "configure"]

#: Attributes a record may carry (as ``extra=``) that the JSON line includes.
FIELDS = ("plugin", "tool", "call_id", "trace_id")


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value not in (None, ""):
                out[name] = value
        if "trace_id" not in out:
            trace_id = _current_trace_id()
            if trace_id:
                out["trace_id"] = trace_id
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def _current_trace_id() -> str:
    # Only where the host traces (OpenTelemetry already imported): never imports it.
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return ""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def configure(level: int) -> None:
    """Send every log record at ``level`` and above to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
