"""Seeing what a running host does: metrics and traces of calls (:mod:`.tracing`,
imported only when tracing is on), and its status: :mod:`.status` builds the snapshot
that ``mcphost status`` reads from each host's control socket (:mod:`.control`, opened
once the host has started) and the ``serve --metrics`` page (:mod:`.page`) reads from
``/status.json``. Those modules are imported when a host starts or a listener asks.

Counting happens in plain structures (:class:`HostMetrics`, :class:`FrontEndMetrics`):
a call costs a cached lookup and a few adds, and ``prometheus_client`` is imported only
when something asks for Prometheus output (:func:`HostMetrics.registry`,
:mod:`.export`, the ``serve --metrics`` listener in :mod:`.listener`). Each
:class:`~mcphost.host.Host` has its own :class:`HostMetrics` and registry, so two hosts
in one process never mix. ``HostMetrics.snapshot()`` gives the same numbers as plain
data (per plugin: calls in flight, totals, calls/s, p50/p99 of recent calls).

Adding a metric family: count into a plain structure reachable from ``HostMetrics``
(outside any call's hot path, or as cheaply as :class:`RouteStats`), write one
``@family`` function in :mod:`.export` that yields its families, and list it in
docs/operators.md "Monitoring". A feature with rows of its own in ``status`` (streams,
batch queues) fills the ``streams`` or ``queues`` list in :func:`.status.collect`; the
table, ``--json`` and the page show them.
"""

from __future__ import annotations

from .calls import BUCKETS, PluginCalls, RouteStats
from .frontend import FrontEndMetrics, RequestStats
from .metrics import HostMetrics, crash_reason

__all__ = [
    "BUCKETS",
    "FrontEndMetrics",
    "HostMetrics",
    "PluginCalls",
    "RequestStats",
    "RouteStats",
    "crash_reason",
]
