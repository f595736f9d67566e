"""Settings that change while a host runs: ``config.toml`` is followed, and each change is
applied at once or, for a setting that needs one, kept for the next restart.

Each setting is live or needs a restart. Live ones are listed in :data:`LIVE` (a dotted
key, or a table whose keys are all live); a feature that reads its setting from
``host.config`` each time it needs it makes it live with one :func:`register_live` call.
Every other setting keeps its running value until the host restarts; those changed in
the file are in ``Host.restart_pending``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from mcphost.sdk.errors import ConfigError

from .config import HostConfig, PluginSettings, load_config

if TYPE_CHECKING:
    from .host import Host

__all__ = [
    "LIVE",
    "POLL_INTERVAL",
    "PendingSetting",
    "apply_config",
    "file_stamp",
    "flat_settings",
    "is_live",
    "register_live",
    "watch_config",
]

log = logging.getLogger("mcphost.config")

#: Seconds between two looks at config.toml (one ``stat``) from a running host.
POLL_INTERVAL = 0.25
#: Seconds before reading a file that could not be read again; doubles, up to RETRY_MAX.
RETRY_INITIAL = 0.5
RETRY_MAX = 30.0

#: Settings a running host applies at once: read each time they are used (timeouts,
#: restart policy, health checks) or when a worker starts (its limits, threads, frame).
LIVE: set[str] = {
    "call_timeout",
    "drain_timeout",
    "handshake_timeout",
    "max_restarts",
    "restart_period",
    "backoff_initial",
    "backoff_max",
    "ping_interval",
    "ping_timeout",
    "stream_window",
    "worker_threads",
    "max_frame",
    "limits",
    "streaming",
    # Batchers are made anew for calls from then on; queued calls leave as before.
    "batching",
    "features.batching",
    # Pools take new bounds at their next look at the load (``*``: any plugin).
    "plugins.*.replicas",
    "plugins.*.min_replicas",
    "plugins.*.max_replicas",
    "plugins.*.target_load",
    "plugins.*.target_latency",
    "plugins.*.scale_down_after",
    # How tools are named: a clash with another plugin refuses the whole change.
    "plugins.*.expose",
    "plugins.*.tools",
}


#: Tables keyed by names of the user's (which may hold dots): one setting each, compared
#: and applied whole.
WHOLE_TABLES: set[str] = {"batching.tools", "plugins.*.tools"}


def register_live(*keys: str) -> None:
    """Declare settings (dotted keys, or whole tables) that a running host applies live."""
    LIVE.update(keys)


def is_live(key: str) -> bool:
    """Whether ``key`` or a table holding it is in :data:`LIVE` (where a ``*`` part
    stands for any one name: ``plugins.*.replicas``)."""
    parts = key.split(".")
    return any(_matches(".".join(parts[:i]), LIVE) for i in range(1, len(parts) + 1))


def _matches(key: str, patterns: set[str]) -> bool:
    """Whether ``key`` is one of ``patterns`` (a ``*`` part stands for any one name)."""
    if key in patterns:
        return True
    parts = key.split(".")
    return any(
        "*" in p
        and len(pattern := p.split(".")) == len(parts)
        and all(x in ("*", k) for x, k in zip(pattern, parts, strict=True))
        for p in patterns
    )


class PendingSetting(msgspec.Struct, frozen=True, kw_only=True):
    """A setting changed in config.toml that the running host applies only on restart."""

    key: str
    running: Any
    configured: Any


def flat_settings(config: HostConfig) -> dict[str, Any]:
    """Every setting by dotted key (``limits.memory_mb``)."""

    def walk(data: dict[str, Any], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in data.items():
            if isinstance(v, dict) and not _matches(f"{prefix}{k}", WHOLE_TABLES):
                out.update(walk(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    return walk(config.model_dump(), "")


def _merge(running: HostConfig, wanted: HostConfig) -> tuple[HostConfig, list[PendingSetting]]:
    """The configuration to run with (live settings from ``wanted``, the others as they
    run) and the settings that wait for a restart."""
    data = running.model_dump()
    pending = []
    old, new = flat_settings(running), flat_settings(wanted)
    for key, value in new.items():
        if value == old.get(key, _plugin_default(key)):
            continue
        if not is_live(key):
            pending.append(PendingSetting(key=key, running=old.get(key), configured=value))
            continue
        *tables, last = key.split(".")
        table = data
        for t in tables:
            table = table.setdefault(t, {})  # a table new in the file ([plugins.NAME])
        table[last] = value
    # A table gone from the file ([plugins.NAME] deleted): its live keys go too, and so do
    # the others still at their defaults (their going changes nothing).
    for key in old.keys() - new.keys():
        at_default = key.startswith("plugins.") and old[key] == _plugin_default(key)
        if not is_live(key) and not at_default:
            pending.append(PendingSetting(key=key, running=old[key], configured=None))
            continue
        *tables, last = key.split(".")
        table = data
        for t in tables:
            table = table[t]
        del table[last]
    _prune(data)
    return HostConfig.model_validate(data), pending


def _prune(data: dict[str, Any]) -> None:
    """Drop the per-name tables (``plugins.NAME``) left empty."""
    plugins = data.get("plugins")
    if isinstance(plugins, dict):
        for name in [n for n, t in plugins.items() if not t]:
            del plugins[name]


def _plugin_default(key: str) -> Any:
    """A ``[plugins.NAME]`` setting's default: what a plugin with no table runs with."""
    parts = key.split(".")
    if len(parts) == 3 and parts[0] == "plugins":
        return getattr(PluginSettings(), parts[2], None)
    return None


def apply_config(host: Host, wanted: HostConfig) -> list[tuple[str, Any, Any]]:
    """Run ``host`` with ``wanted``'s live settings from now on; note (and log) the others
    as waiting for a restart. Returns the settings changed live: (key, old, new)."""
    applied, pending = _merge(host.config, wanted)
    before, after = flat_settings(host.config), flat_settings(applied)
    changed = [(k, before.get(k), v) for k, v in after.items() if before.get(k) != v]
    changed += [(k, v, None) for k, v in before.items() if k not in after]
    renamed = _naming_of(host.config) != _naming_of(applied)
    if renamed:
        # Names that would clash refuse the whole change: the host keeps its last good
        # configuration (raises NameClash naming both sides).
        host.check_names(config=applied)
    host.config = applied
    if host._env is not None:
        host._env.config = applied
    for key, old, new in changed:
        log.info("setting %s changed from %r to %r (applied without a restart)", key, old, new)
    if any(k.startswith(("batching.", "features.batching")) for k, _, _ in changed):
        host.batching_changed()
    if any(k.startswith("plugins.") for k, _, _ in changed):
        host.plugins_changed()
    known = {p.key: p for p in host.restart_pending}
    for p in pending:
        if known.get(p.key) != p:
            log.warning(
                "setting %s changed to %r; it applies when the host restarts (running: %r)",
                p.key,
                p.configured,
                p.running,
            )
    host.restart_pending = pending
    if host.config_error is not None:
        log.info("the configuration file is valid again; the host uses it")
    host.config_error = None
    if renamed:
        host.names_changed()
    return changed


def _naming_of(config: HostConfig) -> dict[str, Any]:
    """What decides the exposed names in ``config``: per plugin, ``expose`` and ``tools``."""
    return {
        name: (p.expose, p.model_dump()["tools"])
        for name, p in config.plugins.items()
        if p.expose != "prefixed" or p.tools
    }


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells one version of the file from the next (None: no file)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


async def watch_config(host: Host, interval: float = POLL_INTERVAL) -> None:
    """Follow ``host.home.config_file`` until cancelled: one ``stat`` per poll, in a
    thread; on a change the file is read and validated in a thread and applied on the
    loop. A file that does not validate is refused (``host.config_error``, logged once
    per version of the file) and the host keeps its last good configuration."""
    path = host.home.config_file
    # The version the host loaded when it started is not applied again (the app may
    # have reconfigured the host since); without one, the first look reads the file.
    seen: object = host.config_file_stamp
    failures, retry_at = 0, 0.0
    while True:
        try:
            stamp = await asyncio.to_thread(file_stamp, path)
            if stamp != seen and time.monotonic() >= retry_at:
                try:
                    wanted = await asyncio.to_thread(load_config, path)
                except ConfigError as exc:
                    seen = stamp
                    host.config_error = exc.message
                    log.error(
                        "configuration change refused; the host keeps its last good "
                        "configuration: %s",
                        exc.message,
                    )
                except OSError as exc:
                    failures += 1
                    delay = min(RETRY_MAX, RETRY_INITIAL * 2.0 ** (failures - 1))
                    retry_at = time.monotonic() + delay
                    log.error("cannot read %s (next try in %gs): %s", path, delay, exc)
                else:
                    seen, failures = stamp, 0
                    try:
                        apply_config(host, wanted)
                    except ConfigError as exc:
                        host.config_error = exc.message
                        log.error(
                            "configuration change refused; the host keeps its last good "
                            "configuration: %s",
                            exc.message,
                        )
        except Exception:
            log.exception("cannot follow %s", path)
        await asyncio.sleep(interval)
