"""mcphost.registry: installed plugin versions on disk and in SQLite.

Install verified wheels side by side, record which version is active and why, swap and
roll back, remove; every change is crash-safe. The registry never starts a plugin: the
host reads it and runs what is active.
"""

from .crash import CRASH_POINTS
from .db import SCHEMA_VERSION
from .reader import HomeLayout, RegistryReader, sort_versions
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
    "RecoveryReport",
    "Registry",
    "RegistryReader",
    "VersionRecord",
    "check_wheel",
    "sort_versions",
]
