"""Per-stream limits: the configured defaults, lowered per call, and the error that
ends a stream passing one."""

from __future__ import annotations

from typing import Any, NamedTuple

from mcphost.sdk.errors import InvalidArguments, StreamLimitExceeded

from ..config import StreamingConfig

__all__ = ["LIMIT_KEYS", "StreamLimits", "limit_error", "stream_limits"]

#: The limits a call may lower: name -> (kind of value, unit in messages).
LIMIT_KEYS: dict[str, tuple[type, str]] = {
    "max_items": (int, " items"),
    "max_bytes": (int, " bytes"),
    "max_item_bytes": (int, " bytes"),
    "max_duration": (float, "s"),
    "idle_timeout": (float, "s"),
    "slow_consumer_timeout": (float, "s"),
}


class StreamLimits(NamedTuple):
    """The limits one stream runs under (None: no limit)."""

    max_items: int | None = None
    max_bytes: int | None = None
    max_item_bytes: int | None = None
    max_duration: float | None = None
    idle_timeout: float | None = None
    slow_consumer_timeout: float | None = None
    slow_consumer_policy: str = "wait"


def stream_limits(config: StreamingConfig, asked: dict[str, Any] | None = None) -> StreamLimits:
    """The configured limits, each lowered to what ``asked`` gives for it. Asking for
    more than the configured value, an unknown key or a bad value is refused."""
    values: dict[str, Any] = {k: getattr(config, k) for k in LIMIT_KEYS}
    policy = config.slow_consumer_policy
    for key, value in (asked or {}).items():
        if key == "slow_consumer_policy":
            if value not in ("wait", "cancel"):
                raise InvalidArguments(
                    f"slow_consumer_policy must be 'wait' or 'cancel', got {value!r}"
                )
            policy = value
            continue
        if key not in LIMIT_KEYS:
            raise InvalidArguments(
                f"unknown stream limit {key!r}; the limits are "
                + ", ".join([*LIMIT_KEYS, "slow_consumer_policy"])
            )
        kind, unit = LIMIT_KEYS[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (kind is int and not isinstance(value, int))
            or not value > 0
        ):
            raise InvalidArguments(
                f"stream limit {key} must be a {'whole ' if kind is int else ''}number above "
                f"0, got {value!r}"
            )
        configured = values[key]
        if configured is not None and value > configured:
            raise InvalidArguments(
                f"stream limit {key} of {value}{unit} is above the configured "
                f"streaming.{key} of {configured}{unit}; a call may only lower a limit",
                data={"limit": key, "asked": value, "configured": configured},
            )
        values[key] = kind(value)
    return StreamLimits(**values, slow_consumer_policy=policy)


def limit_error(
    tool: str, limit: str, value: float, delivered: int, what: str
) -> StreamLimitExceeded:
    """The error that ends a stream passing ``limit``: it names the limit and its value."""
    unit = LIMIT_KEYS[limit][1]
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return StreamLimitExceeded(
        f"{tool}: stream ended at its limit {limit} = {shown}{unit} ({what}); the items "
        f"before were delivered and the producer was cancelled. Ask for less, or raise "
        f"streaming.{limit}",
        data={"tool": tool, "limit": limit, "value": value, "delivered": delivered},
    )
