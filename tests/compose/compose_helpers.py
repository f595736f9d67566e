"""Small helpers shared by the composition tests."""

from __future__ import annotations

from typing import Any

from mcphost.host import HostConfig


def text_input(*names: str) -> dict[str, Any]:
    """An input schema of required string fields."""
    return {
        "type": "object",
        "properties": {n: {"type": "string"} for n in names},
        "required": list(names),
    }


def config_for_tests(**overrides: Any) -> HostConfig:
    """The rlimits backend and unsigned plugins, as in the host suite."""
    return HostConfig(allow_unsigned=True, isolation="rlimits", **overrides)
