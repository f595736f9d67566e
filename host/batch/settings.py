"""One batch tool's effective settings: the host's ``[batching]`` values, over them the
tool's own (its decorator, from the worker's handshake), over those the operator's
``[batching.tools."<plugin>.<tool>"]``. Pure: the host builds a batcher from the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mcphost.sdk.schema import BatchSettings

from .former import FormerSettings, LevelPolicy

if TYPE_CHECKING:
    from ..config import BatchingConfig

__all__ = ["ToolBatching", "resolve"]


@dataclass(frozen=True, slots=True)
class ToolBatching:
    """What a :class:`~.batcher.ToolBatcher` of one tool is made with."""

    former: FormerSettings
    target_latency: float | None
    max_in_flight: int
    default_priority: int
    large_item_bytes: int
    #: "" when calls are grouped by their other arguments only.
    batch_key: str


def resolve(cfg: BatchingConfig, name: str, own: BatchSettings | None) -> ToolBatching:
    """The settings of batch tool ``name``: ``cfg``'s, the tool's ``own`` over them, the
    operator's per-tool table over both."""
    own = own or BatchSettings()
    op = cfg.tools.get(name)
    size = cfg.max_batch_size if own.max_batch_size is None else own.max_batch_size
    preferred = cfg.preferred_sizes if own.preferred_sizes is None else own.preferred_sizes
    delay = cfg.max_queue_delay if own.max_queue_delay_ms is None else own.max_queue_delay_ms / 1e3
    target = cfg.target_latency if own.target_latency_ms is None else own.target_latency_ms / 1e3
    in_flight = cfg.max_in_flight
    priority = cfg.default_priority if own.priority is None else own.priority
    key = own.batch_key
    if op is not None:
        size = size if op.max_batch_size is None else op.max_batch_size
        preferred = preferred if op.preferred_sizes is None else op.preferred_sizes
        delay = delay if op.max_queue_delay is None else op.max_queue_delay
        target = target if op.target_latency is None else op.target_latency
        in_flight = in_flight if op.max_in_flight is None else op.max_in_flight
        priority = priority if op.priority is None else op.priority
        key = key if op.batch_key is None else op.batch_key
    former = FormerSettings(
        max_batch_size=size,
        # Sizes over the maximum could never be formed.
        preferred_sizes=tuple(sorted(n for n in set(preferred) if n <= size)),
        max_queue_delay=delay,
        levels=tuple(LevelPolicy(max_queue_size=cfg.max_queue_size) for _ in range(cfg.levels)),
        aging=cfg.aging,
        priority_window=cfg.priority_window,
    )
    return ToolBatching(
        former=former,
        target_latency=target,
        max_in_flight=in_flight,
        default_priority=priority,
        large_item_bytes=cfg.large_item_bytes,
        batch_key=key,
    )
