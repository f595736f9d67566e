"""What the batching tests share: a host serving one plugin, batching as asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcphost.host import Host, PluginSource
from mcphost.host.config import HostConfig


def serving(
    tmp_path: Path,
    source: PluginSource,
    features: dict[str, Any] | None = None,
    **batching: Any,
) -> Host:
    """A host (rlimits, unsigned plugins allowed) serving ``source`` alone, with the
    ``[batching]`` and ``[features]`` settings given."""
    config = HostConfig(
        allow_unsigned=True,
        isolation="rlimits",
        batching=batching,  # type: ignore[arg-type]
        features=features or {},  # type: ignore[arg-type]
    )
    return Host(
        tmp_path / "home", config=config, sources=[source], environment=False, registry=False
    )
