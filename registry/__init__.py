"""mcphost.registry: installed plugin versions on disk and in SQLite.

Install verified wheels side by side, record which version is active and why, swap and
roll back, remove; every change is crash-safe, and a lost or damaged database is rebuilt
from the store's signed wheels (:func:`rebuild_registry`). The registry never starts a
plugin: the host reads it and runs what is active.
"""

from .crash import CRASH_POINTS
from .db import SCHEMA_VERSION
from .reader import HomeLayout, RegistryReader, sort_versions
from .rebuild import RebuildReport, rebuild_registry
from .records import Activation, InstallResult, PluginRecord, RecoveryReport, VersionRecord
from .registry import Registry
from .wheels import ENTRY_POINT_GROUP, CheckedWheel, check_wheel

__all__ = [
    "CRASH_POINTS",
    "ENTRY_POINT_GROUP",
    "SCHEMA_VERSION",
    "Activation",
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
