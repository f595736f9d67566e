"""What the registry records, as declared types: plugins, versions, activations."""

from __future__ import annotations

import msgspec

from mcphost.sdk.schema import ToolSpec
from mcphost.security.permissions import Permissions

from .approvals import Approval

__all__ = ["Activation", "InstallResult", "PluginRecord", "RecoveryReport", "VersionRecord"]


class VersionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One installed version of a plugin and where its files are."""

    plugin: str
    version: str
    #: The wheel's distribution name (e.g. ``mcphost-textkit``).
    dist_name: str
    #: sha256 of the wheel as it was given; the wheel is kept in the store under it.
    wheel_sha256: str
    wheel_name: str
    #: ``module:attr`` of the plugin object (the ``mcphost.plugins`` entry point).
    entry: str
    #: The version's directory; ``plugin_dir`` holds the wheel's files, ``deps_dir`` its
    #: dependencies.
    root: str
    plugin_dir: str
    deps_dir: str
    #: The dist-info directory inside ``plugin_dir``, holding the signed manifest.
    dist_info: str
    #: The signing key, ``None`` for an unsigned wheel.
    key_id: str | None
    sequence: int | None
    permissions: Permissions
    #: Tool descriptors learned from a handshake; ``None`` until learned.
    tools: list[ToolSpec] | None
    installed_at: float
    installed_by: str
    active: bool = False
    #: Relative path -> sha256 of every file in ``deps_dir`` at install time.
    deps_files: dict[str, str] | None = None
    #: What the operator approved of its tools (names, descriptions, schemas); ``None``
    #: until approved (a version installed before approvals were recorded).
    approved: Approval | None = None

    @property
    def label(self) -> str:
        return f"{self.plugin} {self.version}"

    @property
    def paths(self) -> list[str]:
        """The directories a worker puts on ``sys.path`` for this version."""
        return [self.plugin_dir, self.deps_dir]


class Activation(msgspec.Struct, frozen=True, kw_only=True):
    """One change of which version serves a plugin (or an install or removal)."""

    plugin: str
    #: Unix seconds.
    at: float
    #: The operating-system user who made the change.
    user: str
    #: "install", "activate", "swap", "rollback", "remove" or "deactivate".
    action: str
    from_version: str | None
    to_version: str | None
    reason: str = ""


class PluginRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A plugin name and what the registry knows of it."""

    name: str
    #: The key the name belongs to (the first that installed it); ``None`` if unsigned.
    owner_key: str | None
    active_version: str | None
    #: Installed versions, oldest first (ordered by ``packaging.version``).
    versions: list[str]
    reset_serial: int = 0


class InstallResult(msgspec.Struct, frozen=True, kw_only=True):
    """What an install did."""

    plugin: str
    version: str
    #: False when this exact wheel was installed already (nothing was rebuilt).
    installed: bool
    activated: bool
    #: The version that served before, when this install activated another.
    previous: str | None
    key_id: str | None
    wheel_sha256: str
    warnings: list[str] = []
    #: For a wheel installed already: how its installed files had changed since, now
    #: restored from the wheel (empty when they had not).
    repaired: list[str] = []


class RecoveryReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a recovery sweep removed: leftovers of interrupted installs and removals."""

    removed_dirs: list[str] = []
    removed_wheels: list[str] = []
