"""How a running host follows the installed compositions (within a second of a change)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..home import Home
from .model import Composition
from .served import Served
from .store import CompositionStore, store_path

if TYPE_CHECKING:
    from ..host import Host

__all__ = ["POLL_INTERVAL", "follow", "read_installed"]

log = logging.getLogger("mcphost.compose")

#: Seconds between two looks at the compositions' generation.
POLL_INTERVAL = 0.25


def read_installed(home: Home) -> tuple[int, list[tuple[Composition, str, str | None]]]:
    """(generation, active compositions) of the home; nothing when none were added."""
    if not store_path(home).exists():
        return -1, []
    with CompositionStore(home) as store:
        return store.generation(), store.active()


async def follow(host: Host, served: Served, generation: int) -> None:
    """Apply every change of the home's compositions to ``host`` until cancelled."""
    while True:
        await asyncio.sleep(POLL_INTERVAL)
        try:
            gen, comps = await asyncio.to_thread(_read_if_changed, host.home, generation)
        except Exception as exc:  # a broken file: keep serving what was read last
            log.error("cannot read the installed compositions: %s", exc)
            continue
        if gen == generation:
            continue
        generation = gen
        served.replace(comps, host.plugin_catalog())
        host.compositions_changed()


def _read_if_changed(
    home: Home, generation: int
) -> tuple[int, list[tuple[Composition, str, str | None]]]:
    if not store_path(home).exists():
        return -1, []
    with CompositionStore(home) as store:
        gen = store.generation()
        return (gen, []) if gen == generation else (gen, store.active())
