"""Extension points for apps that embed the host (pluggy hook specifications).

Hooks run in the host process only; plugins are never pluggy plugins of the host.
Register an object with methods marked ``@hookimpl`` via ``Host(hooks=[obj])``.
"""

from __future__ import annotations

from typing import Any

import pluggy

__all__ = ["HostPluginManager", "hookimpl", "hookspec", "make_plugin_manager"]

PROJECT = "mcphost"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class HostSpecs:
    """The hooks the host calls."""

    @hookspec(firstresult=True)
    def mcphost_authorize_call(
        self, tool: str, plugin: str, arguments: dict[str, Any]
    ) -> bool | str | None:
        """Return False (or a reason string) to refuse the call; None or True to allow."""

    @hookspec
    def mcphost_before_call(self, tool: str, plugin: str, arguments: dict[str, Any]) -> None:
        """Called just before a call is sent to its worker."""

    @hookspec
    def mcphost_after_call(
        self,
        tool: str,
        plugin: str,
        arguments: dict[str, Any],
        duration: float,
        outcome: str,
        error: BaseException | None,
    ) -> None:
        """Called after a call: ``outcome`` is "ok" or the error's code."""

    @hookspec
    def mcphost_plugin_started(self, plugin: str, version: str, pid: int) -> None:
        """A worker for the plugin completed its handshake."""

    @hookspec
    def mcphost_plugin_crashed(self, plugin: str, version: str, reason: str) -> None:
        """A worker died or was killed unexpectedly."""

    @hookspec
    def mcphost_plugin_swapped(
        self, plugin: str, old_version: str | None, new_version: str
    ) -> None:
        """Routing for a plugin switched to another version."""


class HostPluginManager(pluggy.PluginManager):
    """pluggy's manager, counting registrations: the host checks which call hooks have
    implementations only when :attr:`generation` has moved, not on every call."""

    #: Moves on with every register and unregister.
    generation = 0

    def register(self, plugin: object, name: str | None = None) -> str | None:
        try:
            return super().register(plugin, name)
        finally:
            self.generation += 1

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        try:
            return super().unregister(plugin, name)
        finally:
            self.generation += 1


def make_plugin_manager(hooks: list[object] | tuple[object, ...] = ()) -> HostPluginManager:
    pm = HostPluginManager(PROJECT)
    pm.add_hookspecs(HostSpecs)
    for h in hooks:
        pm.register(h)
    return pm
