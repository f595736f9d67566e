"""The operator's policy applied to what a plugin was granted, before every start."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import msgspec

from mcphost.sandbox.isolation import Limits
from mcphost.sdk.errors import PluginError

from .config import HostConfig
from .sources import PluginSource

__all__ = ["PolicyDenied", "enforce_policy"]


class PolicyDenied(PluginError):
    """A plugin asks for something the operator's configuration does not allow."""

    code = "policy_denied"


def _cap(asked: int | None, default: int | None, cap: int | None) -> int | None:
    """What a plugin gets: what it asked for, else the host's default; never above the cap."""
    value = asked if asked is not None else default
    if cap is None:
        return value
    if value is None:
        return cap
    return min(value, cap)


def enforce_policy(source: PluginSource, config: HostConfig) -> PluginSource:
    """Return ``source`` with its limits capped; raise PolicyDenied for refused grants."""
    pol = config.policy
    g = source.grants
    where = f"plugin {source.label}"
    fix = "; allow it in the [policy] section of config.toml or do not install this plugin"
    if g.network is not None:
        if not pol.network:
            raise PolicyDenied(
                f"{where} asks for network access ({', '.join(g.network) or 'any'}),"
                f" which the configuration denies (policy.network = false){fix}"
            )
        if pol.network_allow is not None:
            bad = [
                n
                for n in g.network
                if not any(fnmatch.fnmatch(n, pat) for pat in pol.network_allow)
            ]
            if bad:
                raise PolicyDenied(
                    f"{where} asks for network access to {', '.join(bad)}, which "
                    f"policy.network_allow does not include{fix}"
                )
    paths = [*g.read_paths, *g.write_paths]
    if paths:
        if not pol.filesystem:
            raise PolicyDenied(
                f"{where} asks for filesystem paths {', '.join(paths)}, which the "
                f"configuration denies (policy.filesystem = false){fix}"
            )
        if pol.filesystem_allow is not None:
            roots = [Path(r).resolve() for r in pol.filesystem_allow]
            bad = [p for p in paths if not any(Path(p).resolve().is_relative_to(r) for r in roots)]
            if bad:
                raise PolicyDenied(
                    f"{where} asks for paths {', '.join(bad)} outside policy.filesystem_allow{fix}"
                )
    if pol.env_allow is not None:
        bad = [e for e in g.env if e not in pol.env_allow]
        if bad:
            raise PolicyDenied(
                f"{where} asks for environment variables {', '.join(bad)}, "
                f"which policy.env_allow does not include{fix}"
            )
    base = source.limits
    if base is None:  # the host's own default limits apply; the operator set those
        return source
    default = config.limits.to_limits()
    capped = Limits(
        memory_mb=_cap(base.memory_mb, default.memory_mb, pol.max_memory_mb),
        cpu_seconds=_cap(base.cpu_seconds, default.cpu_seconds, pol.max_cpu_seconds),
        open_files=_cap(base.open_files, default.open_files, pol.max_open_files),
        processes=_cap(base.processes, default.processes, pol.max_processes),
        file_size_mb=_cap(base.file_size_mb, default.file_size_mb, None),
        tmp_mb=_cap(base.tmp_mb, default.tmp_mb, None),
    )
    return msgspec.structs.replace(source, limits=capped)
