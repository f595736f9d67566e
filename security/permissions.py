"""What a plugin asks to be allowed: network, files, environment, resource limits.

Plugin publishers write these in a small TOML file, which ``mcphost plugin sign`` puts
into the signed manifest; the sandbox enforces them. The file format::

    # No `network` key: no network at all. Otherwise "host:port" entries ("*" for any).
    network = ["api.example.org:443"]
    # Names of host environment variables passed through to the worker.
    env = ["LANG"]

    [filesystem]
    read = ["/usr/share/dict"]   # absolute paths, mounted read-only
    write = []                   # absolute paths, mounted writable

    [limits]                     # all optional; unset means the host's default
    memory_mb = 256
    cpu_seconds = 60
    processes = 8
    open_files = 64
    file_size_mb = 16
    tmp_mb = 32
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from mcphost.sdk.errors import ConfigError

__all__ = ["PermissionLimits", "Permissions", "load_permissions", "parse_permissions"]

_HOST_PORT = re.compile(
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?|\*)"
    r":(?P<port>\d{1,5}|\*)"
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LIMIT_NAMES = ("memory_mb", "cpu_seconds", "processes", "open_files", "file_size_mb", "tmp_mb")
_MAX_ENTRIES = 256


class PermissionLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Resource limits a plugin declares; ``None`` leaves the host's default in force."""

    memory_mb: int | None = None
    cpu_seconds: int | None = None
    processes: int | None = None
    open_files: int | None = None
    file_size_mb: int | None = None
    tmp_mb: int | None = None


class Permissions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a plugin may do beyond computing: the default is nothing at all."""

    #: ``None``: no network. Otherwise the ``host:port`` entries allowed ("*" for any).
    network: list[str] | None = None
    read_paths: list[str] = []
    write_paths: list[str] = []
    #: Names of host environment variables passed through to the worker.
    env: list[str] = []
    limits: PermissionLimits = PermissionLimits()

    def validate(self, source: str = "permissions") -> Permissions:
        """Check every entry; raise :class:`ConfigError` naming the bad key. Returns self."""
        if self.network is not None:
            _check_list(self.network, f"{source}: network")
            for entry in self.network:
                if entry == "*":
                    continue
                m = _HOST_PORT.fullmatch(entry)
                if m is None or (m["port"] != "*" and not 0 < int(m["port"]) < 65536):
                    raise ConfigError(
                        f"{source}: network entry {entry!r} is not host:port "
                        '(for example "api.example.org:443", "[::1]:8080" or "*")'
                    )
        for key, paths in (
            ("filesystem.read", self.read_paths),
            ("filesystem.write", self.write_paths),
        ):
            _check_list(paths, f"{source}: {key}")
            for p in paths:
                if not p.startswith("/") or "\x00" in p or ".." in p.split("/"):
                    raise ConfigError(
                        f"{source}: {key} entry {p!r} must be an absolute path without '..'"
                    )
        _check_list(self.env, f"{source}: env")
        for name in self.env:
            if not _ENV_NAME.fullmatch(name):
                raise ConfigError(
                    f"{source}: env entry {name!r} is not an environment variable name"
                )
        for name in _LIMIT_NAMES:
            value = getattr(self.limits, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{source}: limits.{name} must be a positive integer")
        return self


def _check_list(value: list[str], where: str) -> None:
    if len(value) > _MAX_ENTRIES:
        raise ConfigError(f"{where} has {len(value)} entries; at most {_MAX_ENTRIES} are allowed")


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return list(value)


def _table(value: Any, source: str, section: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {section} must be a table ([{section}])")
    for key in value:
        if key not in allowed:
            name = f"{section}.{key}" if section else key
            where = f" in [{section}]" if section else ""
            raise ConfigError(
                f"{source}: unknown key {name!r}; the keys allowed{where} are: "
                + ", ".join(allowed)
            )
    return value


def parse_permissions(doc: dict[str, Any], source: str = "permissions") -> Permissions:
    """Build :class:`Permissions` from a parsed TOML document (see the module docstring)."""
    _table(doc, source, "", ("network", "env", "filesystem", "limits"))
    network = _strings(doc["network"], f"{source}: network") if "network" in doc else None
    env = _strings(doc.get("env", []), f"{source}: env")
    fs = _table(doc.get("filesystem", {}), source, "filesystem", ("read", "write"))
    read = _strings(fs.get("read", []), f"{source}: filesystem.read")
    write = _strings(fs.get("write", []), f"{source}: filesystem.write")
    raw_limits = _table(doc.get("limits", {}), source, "limits", _LIMIT_NAMES)
    for key, value in raw_limits.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: limits.{key} must be a positive integer, not {value!r}")
    perms = Permissions(
        network=network,
        read_paths=read,
        write_paths=write,
        env=env,
        limits=PermissionLimits(**raw_limits),
    )
    return perms.validate(source)


def load_permissions(path: Path) -> Permissions:
    """Read a permissions TOML file; errors name the file and the bad key."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read permissions file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"permissions file {path} is not valid TOML: {exc}") from exc
    return parse_permissions(doc, source=str(path))
