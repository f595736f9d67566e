"""Spins on the CPU forever."""

from __future__ import annotations

from mcphost.sdk import Plugin

plugin = Plugin("attack_cpu_spin", description="Burns CPU without end")


@plugin.tool
def attack() -> str:
    """Never returns."""
    n = 0
    while True:
        n += 1
