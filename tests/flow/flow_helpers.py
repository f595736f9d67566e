"""Helpers of the flow suite."""

from __future__ import annotations

from mcphost.host import Host


async def closed_generators(host: Host) -> int:
    result = await host.call("flowkit.closed")
    assert isinstance(result, int)
    return result
