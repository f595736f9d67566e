"""The host's configuration: one TOML file under the home, validated with pydantic."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mcphost.sandbox.isolation import Limits
from mcphost.sdk.errors import ConfigError

if TYPE_CHECKING:
    from .pool.scaling import ScalingPolicy

__all__ = [
    "BatchingConfig",
    "ClusterConfig",
    "FeaturesConfig",
    "HostConfig",
    "LimitsConfig",
    "PluginSettings",
    "PolicyConfig",
    "StreamingConfig",
    "ToolBatchingConfig",
    "ToolOverride",
    "load_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LimitsConfig(_Strict):
    """Default resource limits of every worker (a plugin may ask for less or, within
    the caps below, more)."""

    memory_mb: int | None = Field(1024, ge=16)
    cpu_seconds: int | None = Field(600, ge=1)
    open_files: int | None = Field(256, ge=16)
    processes: int | None = Field(64, ge=1)
    file_size_mb: int | None = Field(256, ge=1)
    tmp_mb: int | None = Field(64, ge=1)

    def to_limits(self) -> Limits:
        return Limits(**self.model_dump())


class PolicyConfig(_Strict):
    """What the operator allows plugins to ask for; a plugin asking for more is refused
    (limits are capped instead)."""

    #: Allow plugins that ask for network access at all.
    network: bool = True
    #: When set, only these ``host:port`` entries may be granted ("*" matches any).
    network_allow: list[str] | None = None
    #: Allow plugins to be granted extra filesystem paths.
    filesystem: bool = True
    #: When set, only paths under these prefixes may be granted.
    filesystem_allow: list[str] | None = None
    #: Environment variables a plugin may have passed through (None: any it asks for).
    env_allow: list[str] | None = None
    #: Upper bounds for the limits a plugin asks for (None: no cap beyond the defaults').
    max_memory_mb: int | None = Field(4096, ge=16)
    max_cpu_seconds: int | None = Field(3600, ge=1)
    max_processes: int | None = Field(256, ge=1)
    max_open_files: int | None = Field(4096, ge=16)


class FeaturesConfig(_Strict):
    """Switches for the advanced features."""

    streaming: bool = True
    composition: bool = True
    batching: bool = True
    hot_swap: bool = True
    #: Each running host answers ``mcphost status`` on a control socket in the home.
    status: bool = True


class ToolBatchingConfig(_Strict):
    """The operator's batching settings of one tool (``[batching.tools."P.T"]``): each
    set here wins over the tool's own (its decorator) and the ``[batching]`` value."""

    max_batch_size: int | None = Field(None, ge=1)
    preferred_sizes: list[int] | None = None
    max_queue_delay: float | None = Field(None, ge=0, le=10)
    target_latency: float | None = Field(None, gt=0)
    max_in_flight: int | None = Field(None, ge=1, le=64)
    #: An argument's name or a JMESPath expression over the arguments ("": no key).
    batch_key: str | None = None
    #: The priority of a call that names none (0 the highest, up to 100).
    priority: int | None = Field(None, ge=0, le=100)

    @model_validator(mode="after")
    def _check(self) -> ToolBatchingConfig:
        from mcphost.sdk.tool_rules import key_problem

        if self.preferred_sizes is not None and any(n < 1 for n in self.preferred_sizes):
            raise ValueError("preferred_sizes must be whole numbers of 1 or more")
        if self.batch_key:
            problem = key_problem(self.batch_key)
            if problem is not None:
                raise ValueError(problem.removeprefix("its "))
        return self


class BatchingConfig(_Strict):
    """How calls to batch tools are coalesced (``features.batching`` switches it off)."""

    #: Items one batch call may carry at most.
    max_batch_size: int = Field(32, ge=1)
    #: Batch sizes to prefer when more calls wait than one batch may take.
    preferred_sizes: list[int] = Field(default_factory=list)
    #: Seconds the first queued call waits for others while every worker is busy.
    max_queue_delay: float = Field(0.005, ge=0, le=10)
    #: Seconds a batch should take; sizes shrink to keep it (None: only the maximum).
    target_latency: float | None = Field(None, gt=0)
    #: Batches of one tool running at once. With none running a call goes at once; with
    #: some, a group goes when full or after max_queue_delay; at this many, calls wait.
    max_in_flight: int = Field(2, ge=1, le=64)
    #: Priority levels (0 the highest); calls without a priority get ``default_priority``.
    levels: int = Field(3, ge=1, le=16)
    default_priority: int = Field(1, ge=0)
    #: Calls one priority level may hold; one more is refused at once (``busy``).
    max_queue_size: int = Field(1024, ge=1)
    #: Seconds of waiting worth one level of priority.
    aging: float = Field(1.0, gt=0)
    #: Seconds a priority level stays active after its last call arrived: while a level
    #: is active, lower levels yield to it (short batches, one slot kept free; 0: never).
    priority_window: float = Field(0.5, ge=0, le=60)
    #: Calls whose items take about this many bytes or more go in the large lane: they
    #: share batches only with each other, so they never hold small calls back.
    large_item_bytes: int = Field(64 * 1024, ge=1)
    #: Per tool (``"<plugin>.<tool>"``): settings that win over the tool's own.
    tools: dict[str, ToolBatchingConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _tool_names(self) -> BatchingConfig:
        for name in self.tools:
            plugin, dot, tool = name.partition(".")
            if not (plugin and dot and tool) or "." in tool:
                raise ValueError(
                    f"batching.tools: {name!r} is not a tool name; write "
                    '[batching.tools."<plugin>.<tool>"], e.g. [batching.tools."mathkit.factorize"]'
                )
        return self


#: Keys of ``[plugins.NAME]`` that only a scaling pool reads.
_SCALING_KEYS = ("target_load", "target_latency", "scale_down_after")


#: What MCP allows in a tool name: 1 to 128 letters, digits, ``_``, ``-`` and ``.``.
TOOL_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"


class ToolOverride(_Strict):
    """How one tool of a plugin is offered (``[plugins.NAME.tools.TOOL]``): another name,
    another description. Left out, the author's (with the plugin's ``expose``)."""

    name: str | None = Field(None, pattern=TOOL_NAME_PATTERN)
    description: str | None = Field(None, max_length=65536)


class PluginSettings(_Strict):
    """What the operator sets for one plugin (``[plugins.NAME]``): a fixed count of
    workers (``replicas``), or bounds the count follows with the load (``min_replicas``,
    ``max_replicas`` and the scaling targets); and how its tools are named (``expose``,
    ``tools``). All apply live."""

    #: Workers of the plugin running at once (a fixed count; 1 when nothing is set);
    #: calls go to the least busy (of two picked at random). Replicas share the
    #: plugin's data directory.
    replicas: int | None = Field(None, ge=1, le=64)
    #: The fewest and most workers of a scaling pool (min 1 and max min when unset).
    min_replicas: int | None = Field(None, ge=1, le=64)
    max_replicas: int | None = Field(None, ge=1, le=64)
    #: Calls in flight or queued per replica above which the pool grows.
    target_load: float = Field(2.0, gt=0)
    #: Seconds a call should spend in the pool; above it, with calls sharing replicas,
    #: the pool grows by one (None: latency does not scale).
    target_latency: float | None = Field(None, gt=0)
    #: Seconds the load must fit in one replica fewer before one stops.
    scale_down_after: float = Field(60.0, ge=0)
    #: How its tools are named to callers: ``<plugin>.<tool>`` ("prefixed") or as the
    #: author named them ("bare"). Live; a clash with another plugin is refused.
    expose: Literal["prefixed", "bare"] = "prefixed"
    #: Per tool, by the author's name: a new name or description (live).
    tools: dict[str, ToolOverride] = Field(default_factory=dict)
    #: Where the plugin's workers run: on this machine, or on the Ray cluster of
    #: ``[cluster]`` (docs/cluster.md).
    placement: Literal["local", "ray"] = "local"
    #: With ``placement = "ray"``: how many of ``replicas`` run on Ray (the others run
    #: here); None: all of them.
    ray_replicas: int | None = Field(None, ge=0, le=64)
    #: Ray resources each remote worker reserves: CPUs and custom resources by name.
    num_cpus: float = Field(1.0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict)
    #: Ray label selectors the node of each remote worker must satisfy, by label key:
    #: ``"a"``, ``"!a"``, ``"in(a,b)"``, ``"!in(a,b)"`` (docs/cluster.md).
    labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> PluginSettings:
        if self.labels:
            from .cluster.labels import label_error

            for key, value in self.labels.items():
                why = label_error(key, value)
                if why is not None:
                    raise ValueError(why)
        bounds = [k for k in ("min_replicas", "max_replicas") if getattr(self, k) is not None]
        if self.replicas is not None and bounds:
            raise ValueError(
                f"replicas (a fixed count) and {' and '.join(bounds)} (a scaling pool) "
                "contradict each other; set either replicas = N, or min_replicas and "
                "max_replicas"
            )
        fields = type(self).model_fields
        scaling = [k for k in _SCALING_KEYS if getattr(self, k) != fields[k].default]
        if self.replicas is not None and scaling:
            raise ValueError(
                f"{', '.join(scaling)} only apply to a scaling pool, and replicas sets a "
                "fixed count; use min_replicas and max_replicas instead of replicas"
            )
        low = self.min_replicas or 1
        high = self.max_replicas if self.max_replicas is not None else low
        if low > high:
            raise ValueError(
                f"min_replicas ({low}) is above max_replicas ({high}); make "
                "min_replicas <= max_replicas"
            )
        if self.placement == "ray":
            if bounds or scaling:
                raise ValueError(
                    'placement = "ray" takes a fixed count of workers (replicas = N); '
                    f"remove {', '.join(bounds + scaling)}"
                )
            if self.ray_replicas is not None and self.ray_replicas > (self.replicas or 1):
                raise ValueError(
                    f"ray_replicas ({self.ray_replicas}) must not be above replicas "
                    f"({self.replicas or 1})"
                )
        return self

    def policy(self) -> ScalingPolicy:
        """The pool these settings ask for."""
        from .pool.scaling import ScalingPolicy

        if self.replicas is not None:
            return ScalingPolicy(min_replicas=self.replicas, max_replicas=self.replicas)
        low = self.min_replicas or 1
        return ScalingPolicy(
            min_replicas=low,
            max_replicas=self.max_replicas if self.max_replicas is not None else low,
            target_load=self.target_load,
            target_latency=self.target_latency,
            scale_down_after=self.scale_down_after,
        )


class ClusterConfig(_Strict):
    """The cluster that hosts plugins placed on it (``[cluster]``, docs/cluster.md)."""

    backend: Literal["ray"] = "ray"
    #: "auto": the Ray cluster this machine belongs to (``ray start``); "ray://host:port":
    #: one reached through Ray Client; "local": a cluster started by the host for itself.
    address: str = "auto"
    #: CPUs of the cluster the host starts with ``address = "local"`` (None: all here).
    local_num_cpus: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _address(self) -> ClusterConfig:
        if self.address not in ("auto", "local") and not self.address.startswith("ray://"):
            raise ValueError(
                f'address {self.address!r} is not "auto", "local" or "ray://host:port"'
            )
        return self


class ToolPriority(_Strict):
    """The admission priority of one tool's streams."""

    tool: str
    priority: int = Field(ge=0, le=100)


class StreamingConfig(_Strict):
    """Flow control of streams (docs/streaming.md): credit windows, watermarks,
    admission by priority and per-stream limits. Every key applies live, to streams
    admitted after the change."""

    #: Items a worker may have sent and not yet been credited (None: ``stream_window``).
    window_items: int | None = Field(None, ge=1)
    #: Bytes a worker may have sent and not yet been credited (one item may pass it).
    window_bytes: int = Field(1024 * 1024, ge=1024)
    #: Bytes buffered toward a stream's consumer above which the host stops crediting.
    high_watermark: int = Field(1024 * 1024, ge=1)
    #: Bytes buffered at or below which a paused stream is credited again.
    low_watermark: int = Field(256 * 1024, ge=0)
    #: Streams running at once on this host, and per plugin; more wait for admission.
    max_concurrent: int = Field(64, ge=1)
    max_concurrent_per_plugin: int = Field(16, ge=1)
    #: Seconds a stream waits for admission before it fails with ``busy``.
    admission_timeout: float = Field(30.0, gt=0)
    #: Seconds of waiting that raise a waiting stream's priority by one level.
    aging_seconds: float = Field(1.0, gt=0)
    #: A stream of a higher priority that finds no place suspends the running stream
    #: of the lowest priority below its own (no credit until a place frees) instead of
    #: waiting for it to end.
    preempt: bool = True
    #: Priority of a stream that names none, and per tool (``<plugin>.<tool>``): 0 is
    #: the highest, larger numbers wait behind (as for batch calls).
    default_priority: int = Field(1, ge=0, le=100)
    tool_priority: list[ToolPriority] = []
    #: Per-stream limits (None: no limit); a call may ask for less, never more.
    max_items: int | None = Field(None, ge=1)
    max_bytes: int | None = Field(None, ge=1)
    max_item_bytes: int | None = Field(None, ge=1)
    max_duration: float | None = Field(None, gt=0)
    idle_timeout: float | None = Field(None, gt=0)
    #: Seconds a paused stream's consumer may take no item; then ``slow_consumer_policy``.
    slow_consumer_timeout: float | None = Field(None, gt=0)
    slow_consumer_policy: Literal["wait", "cancel"] = "wait"

    @model_validator(mode="after")
    def _ordered(self) -> StreamingConfig:
        if self.low_watermark > self.high_watermark:
            raise ValueError(
                f"low_watermark ({self.low_watermark}) must not be above high_watermark "
                f"({self.high_watermark})"
            )
        return self

    def priority_of(self, tool: str) -> int:
        """The configured priority of ``tool``'s streams."""
        for tp in self.tool_priority:
            if tp.tool == tool:
                return tp.priority
        return self.default_priority


class HostConfig(_Strict):
    """Everything an operator can set in ``config.toml``."""

    #: "auto" picks the strongest backend available; "bwrap" or "rlimits" force one.
    isolation: Literal["auto", "bwrap", "rlimits"] = "auto"
    #: Refuse to start plugins unless namespaces (bubblewrap) are available.
    require_namespaces: bool = False
    #: Run plugins that carry no signature (for plugin development only).
    allow_unsigned: bool = False
    limits: LimitsConfig = LimitsConfig()
    policy: PolicyConfig = PolicyConfig()
    #: Seconds a call may run when the caller gives no timeout.
    call_timeout: float = Field(60.0, gt=0)
    #: Seconds a swapped-out version gets to finish the calls it is running.
    drain_timeout: float = Field(10.0, ge=0)
    #: Largest frame on the wire, in bytes.
    max_frame: int = Field(16 * 1024 * 1024, ge=1024)
    #: Items a stream may have in flight before the worker waits for the consumer.
    stream_window: int = Field(256, ge=1)
    #: Threads for sync tools in each worker.
    worker_threads: int = Field(8, ge=1, le=256)
    #: More than this many crashes within restart_period seconds marks a plugin failed.
    max_restarts: int = Field(5, ge=0)
    restart_period: float = Field(60.0, gt=0)
    backoff_initial: float = Field(0.05, ge=0)
    backoff_max: float = Field(5.0, ge=0)
    #: Seconds between health checks (ping and memory reading) of each worker.
    ping_interval: float = Field(1.0, gt=0)
    #: A worker that does not answer a ping within this many seconds is restarted.
    ping_timeout: float = Field(5.0, gt=0)
    handshake_timeout: float = Field(10.0, gt=0)
    features: FeaturesConfig = FeaturesConfig()
    streaming: StreamingConfig = StreamingConfig()
    batching: BatchingConfig = BatchingConfig()
    #: Per plugin, by name.
    plugins: dict[str, PluginSettings] = Field(default_factory=dict)
    #: The cluster plugins with ``placement = "ray"`` run on (None: none).
    cluster: ClusterConfig | None = None

    @model_validator(mode="after")
    def _placement(self) -> HostConfig:
        remote = sorted(n for n, p in self.plugins.items() if p.placement == "ray")
        if not remote:
            return self
        names = ", ".join(remote)
        if self.cluster is None:
            raise ValueError(
                f'plugins {names} have placement = "ray" but there is no [cluster] table; '
                'add [cluster] with backend = "ray" and address = "auto", "local" or '
                '"ray://host:port" (docs/cluster.md), or set placement = "local"'
            )
        from importlib.util import find_spec  # finds Ray without importing it

        if find_spec("ray") is None:
            raise ValueError(
                f'plugins {names} have placement = "ray" but Ray is not installed; install '
                "it with `pip install 'mcphost[ray]'`, or set placement = \"local\""
            )
        return self


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """The keys valid in the table that holds ``loc`` (an unknown key's location)."""
    model: type[BaseModel] = HostConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = field.annotation if field is not None else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def _describe(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            valid = _fields_at(tuple(err["loc"]))
            msg = "unknown key" + (f" (valid keys here: {', '.join(valid)})" if valid else "")
        parts.append(f"{where}: {msg}")
    return f"invalid configuration in {source}: " + "; ".join(parts)


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> HostConfig:
    """Read ``path`` (missing file: defaults), apply ``overrides``, validate it all."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None and path.exists():
        source = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{path} is not valid TOML: {exc}; fix the file or remove it to use defaults"
            ) from None
    for key, value in (overrides or {}).items():
        data[key] = value
    try:
        return HostConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            _describe(exc, source) + "; fix the file (docs/operators.md lists every key with "
            "its default), then `mcphost config show` prints the effective configuration"
        ) from None
