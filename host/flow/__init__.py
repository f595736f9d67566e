"""Flow control of streams: admission by priority, watermarks, per-stream limits.

Every ``Host.stream`` runs through the host's :class:`Flow`: it waits for admission
(:mod:`.admission`: ``streaming.max_concurrent`` per host and
``max_concurrent_per_plugin`` per plugin, a priority queue with aging, ``busy`` after
``admission_timeout``), then runs with credit in items and bytes on the wire and high
and low watermarks on the host's buffer toward its consumer (:mod:`.watermarks`), under
its limits (:mod:`.limits`), counted per tool (:mod:`.metrics`).
:meth:`Flow.snapshot` lists the active streams and the admission queue as plain data.
See docs/streaming.md.
"""

from __future__ import annotations

from .admission import Admission, AdmissionLimits, AdmissionQueue, Ticket
from .controller import ActiveStream, Flow, checked_priority
from .limits import StreamLimits, limit_error, stream_limits
from .metrics import StreamMetrics, ToolStreams
from .watermarks import Watermarks

__all__ = [
    "ActiveStream",
    "Admission",
    "AdmissionLimits",
    "AdmissionQueue",
    "Flow",
    "StreamLimits",
    "StreamMetrics",
    "Ticket",
    "ToolStreams",
    "Watermarks",
    "checked_priority",
    "limit_error",
    "stream_limits",
]
