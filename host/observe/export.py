"""The Prometheus side: metric families built from the plain structures at scrape time.

Imported only when an exporter (``serve --metrics``) or a reader asks, never on a call's
path. Each ``@family`` function below turns one room's counts into families; adding a
family later (streams, batches, compositions) is one step: count into a plain structure
reachable from :class:`~.metrics.HostMetrics`, then write one ``@family`` function here
(or in the new room, imported by this module) that yields its families, and list it in
docs/operators.md "Monitoring".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .calls import BUCKETS
from .metrics import HostMetrics

if TYPE_CHECKING:
    from ..host import Host

__all__ = ["HostCollector", "family", "render"]

Builder = Callable[[HostMetrics, "Host | None"], Iterable[Metric]]
FAMILIES: list[Builder] = []
_LE = [repr(b) for b in BUCKETS] + ["+Inf"]
MIB = 1024 * 1024


def family(fn: Builder) -> Builder:
    """Register ``fn`` as a builder of metric families (called at every scrape)."""
    FAMILIES.append(fn)
    return fn


def _buckets(counts: list[int]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    acc = 0
    for le, n in zip(_LE, counts, strict=True):
        acc += n
        out.append((le, acc))
    return out


class HostCollector:
    """A ``prometheus_client`` collector over one host's :class:`HostMetrics`."""

    def __init__(self, metrics: HostMetrics, host: Callable[[], Host | None]) -> None:
        self.metrics = metrics
        self.host = host

    def collect(self) -> Iterator[Metric]:
        host = self.host()
        for build in FAMILIES:
            yield from build(self.metrics, host)


def render(metrics: HostMetrics, host: Host | None = None) -> bytes:
    """The Prometheus text exposition of everything ``metrics`` counts: the same
    families as its registry gives, with the per-tool ones written by a fast path
    (label text made once per tool and cached) so 500 tools take milliseconds."""
    from prometheus_client.exposition import generate_latest

    rest = _Families(metrics, host, [b for b in FAMILIES if b is not calls])
    return _calls_text(metrics).encode() + generate_latest(rest)


class _Families:
    def __init__(self, m: HostMetrics, host: Host | None, builders: list[Builder]) -> None:
        self.m, self.host, self.builders = m, host, builders

    def collect(self) -> Iterator[Metric]:
        for build in self.builders:
            yield from build(self.m, self.host)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _route_text(m: HostMetrics, name: str, plugin: str) -> tuple[str, list[str], str, str]:
    """Label text of one tool's samples: made once, reused by every scrape."""
    cache = m.text_cache
    hit = cache.get(name)
    if hit is None:
        labels = f'plugin="{_escape(plugin)}",tool="{_escape(name)}"'
        h = "mcphost_tool_call_duration_seconds"
        hit = cache[name] = (
            labels,
            [f'{h}_bucket{{{labels},le="{le}"}} ' for le in _LE],
            f"{h}_sum{{{labels}}} ",
            f"{h}_count{{{labels}}} ",
        )
    return hit


def _calls_text(m: HostMetrics) -> str:
    """``mcphost_tool_calls_total``, the duration histogram and calls in flight."""
    total = [
        "# HELP mcphost_tool_calls_total " + _CALLS_HELP,
        "# TYPE mcphost_tool_calls_total counter",
    ]
    hist = [
        "# HELP mcphost_tool_call_duration_seconds " + _DURATION_HELP,
        "# TYPE mcphost_tool_call_duration_seconds histogram",
    ]
    for name, r in list(m.routes.items()):
        labels, buckets, sum_p, count_p = _route_text(m, name, r.owner.plugin)
        total.append(f'mcphost_tool_calls_total{{{labels},outcome="ok"}} {r.ok}')
        for code, n in list(r.errors.items()):
            total.append(f'mcphost_tool_calls_total{{{labels},outcome="{_escape(code)}"}} {n}')
        acc = 0
        for prefix, n in zip(buckets, r.buckets, strict=True):
            acc += n
            hist.append(prefix + str(acc))
        hist.append(sum_p + repr(r.sum))
        hist.append(count_p + str(acc))
    gauge = [
        "# HELP mcphost_tool_calls_in_flight " + _IN_FLIGHT_HELP,
        "# TYPE mcphost_tool_calls_in_flight gauge",
    ]
    for plugin, pc in list(m.plugins.items()):
        gauge.append(f'mcphost_tool_calls_in_flight{{plugin="{_escape(plugin)}"}} {pc.in_flight}')
    return "\n".join(total + hist + gauge) + "\n"


_CALLS_HELP = (
    "Tool calls by tool (gen_ai.tool.name, <plugin>.<tool>) and outcome (ok or the "
    "stable error code)."
)
_DURATION_HELP = "Duration of tool calls through Host.call, as seen by the host."
_IN_FLIGHT_HELP = "Tool calls under way, by plugin."


@family
def calls(m: HostMetrics, host: Host | None) -> Iterator[Metric]:
    # render() writes these three families by its own fast path (_calls_text).
    total = CounterMetricFamily(
        "mcphost_tool_calls", _CALLS_HELP, labels=["plugin", "tool", "outcome"]
    )
    duration = HistogramMetricFamily(
        "mcphost_tool_call_duration_seconds", _DURATION_HELP, labels=["plugin", "tool"]
    )
    for name, r in list(m.routes.items()):
        plugin = r.owner.plugin
        total.add_metric([plugin, name, "ok"], r.ok)
        for code, n in list(r.errors.items()):
            total.add_metric([plugin, name, code], n)
        duration.add_metric([plugin, name], _buckets(r.buckets), r.sum)
    in_flight = GaugeMetricFamily(
        "mcphost_tool_calls_in_flight", _IN_FLIGHT_HELP, labels=["plugin"]
    )
    for plugin, pc in list(m.plugins.items()):
        in_flight.add_metric([plugin], pc.in_flight)
    yield total
    yield duration
    yield in_flight


def _counter(name: str, doc: str, labels: list[str], values: dict[Any, int]) -> Metric:
    fam = CounterMetricFamily(name, doc, labels=labels)
    for key, n in list(values.items()):
        fam.add_metric(list(key) if isinstance(key, tuple) else [key], n)
    return fam


@family
def workers(m: HostMetrics, host: Host | None) -> Iterator[Metric]:
    yield _counter(
        "mcphost_worker_starts", "Workers that completed their handshake.", ["plugin"], m.starts
    )
    yield _counter(
        "mcphost_worker_crashes",
        "Workers that ended unexpectedly, by reason (hung, limit, protocol, handshake, "
        "signal, exit, other).",
        ["plugin", "reason"],
        m.crashes,
    )
    yield _counter(
        "mcphost_worker_restarts",
        "Workers started again after a crash or a replacement (reason: the crash's, or replaced).",
        ["plugin", "reason"],
        m.restarts,
    )
    if host is None:
        return
    state = GaugeMetricFamily(
        "mcphost_worker_state",
        "1 for the state each plugin's supervisor is in.",
        labels=["plugin", "version", "state"],
    )
    memory = GaugeMetricFamily(
        "mcphost_worker_memory_bytes",
        "Memory of each running worker as a whole (source: cgroup, pss or rss).",
        labels=["plugin", "version", "source"],
    )
    cpu = CounterMetricFamily(
        "mcphost_worker_cpu_seconds",
        "CPU time used by each running worker as a whole (starts again with a new worker).",
        labels=["plugin", "version"],
    )
    placed = GaugeMetricFamily(
        "mcphost_worker_placement",
        "1 for where each worker of a plugin runs (replica: its slot in the pool, 0 for a "
        "single worker; placement: local or ray; node: the Ray node, empty when local or "
        "not running).",
        labels=["plugin", "version", "replica", "placement", "node"],
    )
    for s in host.stats():
        plugin, version = s["plugin"], s["version"]
        state.add_metric([plugin, version, s["state"]], 1)
        for i, r in enumerate(s.get("replicas") or [s]):
            placed.add_metric([plugin, version, str(i), *where(r)], 1)
        if "memory_mb" in s:
            memory.add_metric([plugin, version, s.get("memory_source") or ""], s["memory_mb"] * MIB)
        if "cpu_seconds" in s:
            cpu.add_metric([plugin, version], s["cpu_seconds"])
    yield state
    yield memory
    yield cpu
    yield placed


def where(stats: dict[str, Any]) -> tuple[str, str]:
    """A worker's placement and node labels from its supervisor's stats: ``("local",
    "")`` here, ``("ray", node)`` on a Ray node (node empty while it is not running)."""
    return str(stats.get("placement") or "local"), str(stats.get("node") or "")


@family
def registry(m: HostMetrics, host: Host | None) -> Iterator[Metric]:
    yield _counter(
        "mcphost_registry_swaps",
        "Hot swaps that switched a plugin's routing to another version.",
        ["plugin"],
        m.swaps,
    )
    yield _counter(
        "mcphost_registry_rollbacks",
        "Swaps back to a lower version than the one served.",
        ["plugin"],
        m.rollbacks,
    )
    yield _counter(
        "mcphost_registry_swap_failures",
        "Swaps refused because the new version could not verify or start.",
        ["plugin"],
        m.swap_failures,
    )
    yield _counter(
        "mcphost_verification_failures",
        "Worker starts refused by signature and file verification.",
        ["plugin"],
        m.verification_failures,
    )
    counts = [0] * (len(BUCKETS) + 1)
    from bisect import bisect_left

    for d in list(m.swap_seconds):
        counts[bisect_left(BUCKETS, d)] += 1
    hist = HistogramMetricFamily(
        "mcphost_registry_swap_duration_seconds",
        "Duration of swaps: start of the new version, switch, and drain of the old one.",
    )
    hist.add_metric([], _buckets(counts), sum(m.swap_seconds))
    yield hist
    up = GaugeMetricFamily("mcphost_start_time_seconds", "When the host was made (Unix time).")
    up.add_metric([], m.started_at)
    yield up


@family
def frontend(m: HostMetrics, host: Host | None) -> Iterator[Metric]:
    fe = m.frontend
    if fe is None:
        return
    requests = CounterMetricFamily(
        "mcphost_mcp_requests",
        "MCP requests by method (mcp.method.name) and outcome (ok or the JSON-RPC error code).",
        labels=["method", "outcome"],
    )
    duration = HistogramMetricFamily(
        "mcphost_mcp_request_duration_seconds",
        "Duration of MCP requests as the server handled them (mcp.server.operation.duration).",
        labels=["method"],
    )
    for method, r in list(fe.methods.items()):
        for outcome, n in list(r.outcomes.items()):
            requests.add_metric([method, outcome], n)
        duration.add_metric([method], _buckets(r.buckets), r.sum)
    yield requests
    yield duration
    sessions = GaugeMetricFamily(
        "mcphost_mcp_sessions", "MCP client sessions open now.", labels=["transport"]
    )
    sessions.add_metric([fe.transport], fe.open_sessions())
    yield sessions
    yield _counter(
        "mcphost_mcp_sessions_opened",
        "MCP client sessions opened.",
        ["transport"],
        {fe.transport: fe.sessions_opened},
    )
    yield _counter(
        "mcphost_mcp_received_bytes", "Bytes of MCP messages received.", [], {(): fe.bytes_in}
    )
    yield _counter("mcphost_mcp_sent_bytes", "Bytes of MCP messages sent.", [], {(): fe.bytes_out})
    yield _counter(
        "mcphost_mcp_rejected_inputs",
        "Client input refused before it became a request, by reason.",
        ["reason"],
        fe.rejected,
    )


@family
def compositions(m: HostMetrics, host: Host | None) -> Iterator[Metric]:
    stats = m.compositions
    if stats is None:
        return
    yield _counter(
        "mcphost_composition_runs",
        "Runs of each composition by outcome (ok, failed, timeout, cancelled).",
        ["composition", "outcome"],
        stats.runs,
    )
    yield _counter(
        "mcphost_composition_steps",
        "Steps of each composition's runs: run, skipped, retried (extra attempts), failed.",
        ["composition", "what"],
        stats.steps,
    )
    hist = HistogramMetricFamily(
        "mcphost_composition_duration_seconds",
        "Duration of composition runs, from the call to its result or error.",
        labels=["composition"],
    )
    for name, counts in list(stats.buckets.items()):
        hist.add_metric([name], _buckets(counts), stats.total_seconds.get(name, 0.0))
    yield hist


@family
def batching(m: HostMetrics, host: Host | None) -> Iterator[Metric]:
    if host is None:
        return
    batchers = host.batchers
    if not batchers:
        return
    from ..batch.batcher import SIZE_BUCKETS

    calls = CounterMetricFamily(
        "mcphost_batch_calls",
        "Calls to batch tools that went through the batcher.",
        labels=["tool"],
    )
    sent = CounterMetricFamily(
        "mcphost_batches",
        "Batch calls sent to workers, by why they left: alone (nothing else waited and no "
        "batch ran), idle (no batch of the tool ran), size (full), deadline (waited long "
        "enough).",
        labels=["tool", "reason"],
    )
    rejected = CounterMetricFamily(
        "mcphost_batch_rejected",
        "Calls to batch tools that never ran, by reason (queue_full, queue_timeout, deadline).",
        labels=["tool", "reason"],
    )
    sizes = HistogramMetricFamily(
        "mcphost_batch_size", "Items per batch call answered.", labels=["tool"]
    )
    fill = GaugeMetricFamily(
        "mcphost_batch_fill_ratio",
        "Items per batch call over the largest batch allowed, since the start.",
        labels=["tool"],
    )
    waits = HistogramMetricFamily(
        "mcphost_batch_queue_wait_seconds",
        "Seconds calls waited in a batch queue before their batch left, by priority level.",
        labels=["tool", "priority"],
    )
    queued = GaugeMetricFamily(
        "mcphost_batch_queued", "Calls waiting in a batch queue now.", labels=["tool"]
    )
    running = GaugeMetricFamily(
        "mcphost_batch_in_flight", "Batch calls of the tool running now.", labels=["tool"]
    )
    size_le = [str(b) for b in SIZE_BUCKETS] + ["+Inf"]
    for name, b in sorted(batchers.items()):
        st = b.stats
        calls.add_metric([name], b.calls)
        for reason, n in st.reasons.items():
            sent.add_metric([name, reason], n)
        for reason, n in list(st.rejected.items()):
            rejected.add_metric([name, reason], n)
        acc, cum = 0, []
        for le, n in zip(size_le, st.sizes, strict=True):
            acc += n
            cum.append((le, float(acc)))
        sizes.add_metric([name], cum, float(st.size_sum))
        batches = sum(st.sizes)
        if batches:
            fill.add_metric([name], st.size_sum / (batches * b.settings.max_batch_size))
        for level, counts in sorted(st.wait_buckets.items()):
            waits.add_metric([name, str(level)], _buckets(counts), st.wait_seconds.get(level, 0.0))
        queued.add_metric([name], b.queued)
        running.add_metric([name], b.in_flight)
    yield from (calls, sent, rejected, sizes, fill, waits, queued, running)


@family
def pools(m: HostMetrics, host: Host | None) -> Iterator[Metric]:
    if host is None:
        return
    replicas = GaugeMetricFamily(
        "mcphost_pool_replicas", "Workers a plugin runs at once (its replicas).", labels=["plugin"]
    )
    load = GaugeMetricFamily(
        "mcphost_pool_replica_inflight",
        "Calls in flight on each replica of a plugin run as a pool (placement: local or "
        "ray; node: the Ray node it runs on, empty when local).",
        labels=["plugin", "replica", "placement", "node"],
    )
    bounds = GaugeMetricFamily(
        "mcphost_pool_replica_bounds",
        "The fewest and most replicas a scaling pool may run (bound: min or max).",
        labels=["plugin", "bound"],
    )
    scaled = CounterMetricFamily(
        "mcphost_pool_scaled",
        "Changes of a scaling pool's replica count, by direction (up or down).",
        labels=["plugin", "direction"],
    )
    for s in host.stats():
        each = s.get("replicas")
        replicas.add_metric([s["plugin"]], len(each) if each else 1)
        for i, r in enumerate(each or ()):
            load.add_metric([s["plugin"], str(i), *where(r)], r.get("inflight", 0))
        scaling = s.get("scaling")
        if scaling:
            bounds.add_metric([s["plugin"], "min"], scaling["min_replicas"])
            bounds.add_metric([s["plugin"], "max"], scaling["max_replicas"])
            scaled.add_metric([s["plugin"], "up"], scaling["scaled_up"])
            scaled.add_metric([s["plugin"], "down"], scaling["scaled_down"])
    yield from (replicas, load, bounds, scaled)


@family
def streams(m: HostMetrics, host: Host | None) -> Iterator[Metric]:
    """Streams per tool (host/flow): admission, outcomes, backpressure, throughput."""
    s = m.streams
    if s is None:
        return
    labels = ["plugin", "tool"]
    admitted = CounterMetricFamily(
        "mcphost_streams_admitted", "Streams admitted to run.", labels=labels
    )
    rejected = CounterMetricFamily(
        "mcphost_streams_rejected",
        "Streams refused admission, by reason (busy: waited past admission_timeout; "
        "cancelled: the caller left the queue).",
        labels=[*labels, "reason"],
    )
    completed = CounterMetricFamily(
        "mcphost_streams_completed", "Streams that ran to their end.", labels=labels
    )
    failed = CounterMetricFamily(
        "mcphost_streams_failed",
        "Streams ended by an error, by reason (the limit passed, or the error's code).",
        labels=[*labels, "reason"],
    )
    cancelled = CounterMetricFamily(
        "mcphost_streams_cancelled",
        "Streams whose consumer left before the end (the producer was cancelled).",
        labels=labels,
    )
    pauses = CounterMetricFamily(
        "mcphost_stream_backpressure_events",
        "Times a stream's buffer passed its high watermark and its producer was paused.",
        labels=labels,
    )
    paused = CounterMetricFamily(
        "mcphost_stream_paused_seconds", "Seconds streams spent paused.", labels=labels
    )
    suspensions = CounterMetricFamily(
        "mcphost_stream_suspensions",
        "Times a stream gave its place to one of a higher priority (streams ended).",
        labels=labels,
    )
    items = CounterMetricFamily(
        "mcphost_stream_items", "Stream items delivered to consumers.", labels=labels
    )
    nbytes = CounterMetricFamily(
        "mcphost_stream_bytes", "Bytes of stream items delivered to consumers.", labels=labels
    )
    first = HistogramMetricFamily(
        "mcphost_stream_first_item_seconds",
        "Seconds from admission to a stream's first item.",
        labels=labels,
    )
    duration = HistogramMetricFamily(
        "mcphost_stream_duration_seconds",
        "Seconds from admission to a stream's end.",
        labels=labels,
    )
    for name, t in list(s.tools.items()):
        key = [t.plugin, name]
        admitted.add_metric(key, t.admitted)
        for reason, n in list(t.rejected.items()):
            rejected.add_metric([*key, reason], n)
        completed.add_metric(key, t.completed)
        for reason, n in list(t.failed.items()):
            failed.add_metric([*key, reason], n)
        cancelled.add_metric(key, t.cancelled)
        pauses.add_metric(key, t.pauses)
        paused.add_metric(key, t.paused_seconds)
        suspensions.add_metric(key, t.suspensions)
        items.add_metric(key, t.items)
        nbytes.add_metric(key, t.bytes)
        first.add_metric(key, _buckets(t.first_item_buckets), t.first_item_sum)
        duration.add_metric(key, _buckets(t.duration_buckets), t.duration_sum)
    yield from (admitted, rejected, completed, failed, cancelled, pauses, paused, suspensions)
    yield from (items, nbytes)
    yield from (first, duration)
    active = GaugeMetricFamily(
        "mcphost_streams_active",
        "Streams running now, each holding a place (suspended ones are counted apart).",
        labels=labels,
    )
    suspended = GaugeMetricFamily(
        "mcphost_streams_suspended",
        "Streams suspended now: they gave their place to one of a higher priority.",
        labels=labels,
    )
    queued = GaugeMetricFamily(
        "mcphost_streams_queued", "Streams waiting for admission now.", labels=labels
    )
    buffered = GaugeMetricFamily(
        "mcphost_stream_buffered_bytes",
        "Bytes buffered toward streams' consumers now.",
        labels=labels,
    )
    # Per (plugin, tool): active, suspended, queued, buffered bytes.
    counts: dict[tuple[str, str], list[int]] = {}
    for row in [] if host is None else host.streams():
        c = counts.setdefault((row["plugin"], row["tool"]), [0, 0, 0, 0])
        state = row["state"]
        if state == "queued":
            c[2] += 1
            continue
        # A suspended stream holds no place (admission gave it away): not active.
        c[1 if state == "suspended" else 0] += 1
        c[3] += row["buffered"]
    for name, t in list(s.tools.items()):
        counts.setdefault((t.plugin, name), [0, 0, 0, 0])
    for key2, (a, sus, q, b) in counts.items():
        active.add_metric(list(key2), a)
        suspended.add_metric(list(key2), sus)
        queued.add_metric(list(key2), q)
        buffered.add_metric(list(key2), b)
    yield from (active, suspended, queued, buffered)
