"""mcphost.registry: installed plugin versions on disk and in SQLite.

Install verified wheels side by side, record which version is active and why, swap and
roll back, remove; every change is crash-safe, and a lost or damaged database is rebuilt
from the store's signed wheels (:func:`rebuild_registry`). The registry never starts a
plugin: the host reads it and runs what is active.

The names below load on first use: the host reads the registry (RegistryReader)
without loading what installs, swaps and rebuilds.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .approvals import Approval, ApprovedItem
    from .crash import CRASH_POINTS
    from .db import SCHEMA_VERSION
    from .reader import HomeLayout, RegistryReader, sort_versions
    from .rebuild import RebuildReport, rebuild_registry
    from .records import Activation, InstallResult, PluginRecord, RecoveryReport, VersionRecord
    from .registry import Registry
    from .wheels import ENTRY_POINT_GROUP, CheckedWheel, check_wheel

_WHERE = {
    "Activation": "records",
    "Approval": "approvals",
    "ApprovedItem": "approvals",
    "CRASH_POINTS": "crash",
    "CheckedWheel": "wheels",
    "ENTRY_POINT_GROUP": "wheels",
    "HomeLayout": "reader",
    "InstallResult": "records",
    "PluginRecord": "records",
    "RebuildReport": "rebuild",
    "RecoveryReport": "records",
    "Registry": "registry",
    "RegistryReader": "reader",
    "SCHEMA_VERSION": "db",
    "VersionRecord": "records",
    "check_wheel": "wheels",
    "rebuild_registry": "rebuild",
    "sort_versions": "reader",
}

__all__ = [
    "CRASH_POINTS",
    "ENTRY_POINT_GROUP",
    "SCHEMA_VERSION",
    "Activation",
    "Approval",
    "ApprovedItem",
    "CheckedWheel",
    "HomeLayout",
    "InstallResult",
    "PluginRecord",
    "RebuildReport",
    "RecoveryReport",
    "Registry",
    "RegistryReader",
    "VersionRecord",
    "check_wheel",
    "rebuild_registry",
    "sort_versions",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
