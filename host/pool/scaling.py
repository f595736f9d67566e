"""How many replicas a pool should run: the decision alone, with no I/O.

A pool looks at its load every :data:`INTERVAL` seconds and gives a :class:`Scaler` one
:class:`Load` reading (time is passed in); the scaler answers with the number of
replicas wanted and why. The rules:

- *grow on load*: the calls in flight plus those queued for the pool's batch tools,
  spread over the replicas, should not pass ``target_load`` a replica; when they do,
  the pool grows at once to as many replicas as the load needs (up to
  ``max_replicas``). Starting replicas count, so a start in progress is not asked for
  twice.
- *grow on latency*: with ``target_latency`` set, the mean time a call spends in the
  pool is measured by Little's law (calls in flight / calls finished a second) and
  smoothed over readings; when it passes the target while more calls are in flight
  than replicas (so calls share replicas), the pool grows by one, then waits
  ``cooldown`` seconds for that replica to take its share before it may grow again.
- *shrink when idle*: when the load has fitted in one replica fewer for
  ``scale_down_after`` seconds, one replica stops (the one with the fewest calls,
  after its calls drain); the wait starts again for the next.
- never below ``min_replicas`` nor above ``max_replicas``: a change of the bounds
  (the configuration reload) applies at the next reading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["INTERVAL", "Decision", "Load", "Scaler", "ScalingPolicy"]

#: Seconds between two readings of a scaling pool's load.
INTERVAL = 0.1
#: Weight of the newest reading in the smoothed latency.
_ALPHA = 0.3


@dataclass(frozen=True)
class ScalingPolicy:
    """A pool's bounds and targets (``[plugins.NAME]`` in config.toml)."""

    min_replicas: int = 1
    max_replicas: int = 1
    #: Calls in flight or queued per replica above which the pool grows.
    target_load: float = 2.0
    #: Seconds a call should spend in the pool; None: latency does not scale.
    target_latency: float | None = None
    #: Seconds the load must fit in one replica fewer before one stops.
    scale_down_after: float = 60.0
    #: Seconds after a change before latency may grow the pool again.
    cooldown: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"replicas must satisfy 1 <= min_replicas ({self.min_replicas}) <= "
                f"max_replicas ({self.max_replicas})"
            )

    @property
    def scales(self) -> bool:
        """Whether the count may change with load (else it is fixed)."""
        return self.max_replicas > self.min_replicas


@dataclass(frozen=True)
class Load:
    """One reading of a pool."""

    #: Seconds, on any clock that only goes forward.
    now: float
    #: Replicas the pool has, running or starting.
    replicas: int
    #: Calls in flight on the replicas.
    inflight: int
    #: Calls queued for the pool's batch tools (not yet sent to a replica).
    queued: int = 0
    #: Calls finished since the previous reading.
    finished: int = 0


@dataclass(frozen=True)
class Decision:
    """Replicas wanted, and why (empty when the count stays)."""

    replicas: int
    reason: str = ""


@dataclass
class Scaler:
    """The scaling decision of one pool, fed one :class:`Load` at a time."""

    policy: ScalingPolicy
    #: The smoothed mean seconds a call spends in the pool (None before a measure).
    latency: float | None = None
    _last: float | None = None
    _fits_since: float | None = None
    _changed_at: float = field(default=-math.inf)

    def decide(self, load: Load) -> Decision:
        p = self.policy
        n = load.replicas
        self._measure(load)
        if n < p.min_replicas:
            return self._change(load, p.min_replicas, f"min_replicas is {p.min_replicas}")
        if n > p.max_replicas:
            return self._change(load, p.max_replicas, f"max_replicas is {p.max_replicas}")
        demand = load.inflight + load.queued
        needed = max(p.min_replicas, math.ceil(demand / p.target_load))
        if needed > n:
            want = min(p.max_replicas, needed)
            if want > n:
                return self._change(
                    load,
                    want,
                    f"{demand} calls in flight or queued over {n} replicas "
                    f"(target_load {p.target_load:g})",
                )
        if (
            p.target_latency is not None
            and self.latency is not None
            and self.latency > p.target_latency
            and load.inflight > n
            and n < p.max_replicas
            and load.now - self._changed_at >= p.cooldown
        ):
            return self._change(
                load,
                n + 1,
                f"calls take {self.latency * 1000:.0f} ms "
                f"(target_latency {p.target_latency * 1000:.0f} ms)",
            )
        if n > p.min_replicas and demand <= p.target_load * (n - 1):
            if self._fits_since is None:
                self._fits_since = load.now
            elif load.now - self._fits_since >= p.scale_down_after:
                return self._change(
                    load,
                    n - 1,
                    f"{demand} calls in flight or queued fit in {n - 1} replicas for "
                    f"{p.scale_down_after:g} s",
                )
        else:
            self._fits_since = None
        return Decision(n)

    def _change(self, load: Load, want: int, reason: str) -> Decision:
        self._changed_at = load.now
        self._fits_since = load.now if want < load.replicas else None
        return Decision(want, reason)

    def _measure(self, load: Load) -> None:
        """Little's law: time in the pool = calls in it / calls leaving a second."""
        last, self._last = self._last, load.now
        if last is None or load.now <= last or load.finished <= 0:
            return
        rate = load.finished / (load.now - last)
        sample = (load.inflight + load.queued) / rate
        self.latency = (
            sample if self.latency is None else (_ALPHA * sample + (1 - _ALPHA) * self.latency)
        )
