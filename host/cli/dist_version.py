"""mcphost's installed version, found without importing ``importlib.metadata``.

``mcphost serve`` puts its version in every ``initialize`` result and reads it before it
serves; ``importlib.metadata`` (and the email parser it pulls in) costs more than the
rest of that step. The installed distribution's ``METADATA`` sits in a
``mcphost-<version>.dist-info`` directory on ``sys.path``: the first one found is the
one ``importlib.metadata`` would also find (it searches ``sys.path`` in the same order).
Anything unusual (no such directory, no readable ``Version:`` line) falls back to
``importlib.metadata``.
"""

from __future__ import annotations

import os
import sys

__all__ = ["installed_version"]

_NAME = "mcphost"


def installed_version() -> str:
    """The installed mcphost's version; "0" when it is not installed at all."""
    found = _from_dist_info()
    if found is not None:
        return found
    try:
        from importlib.metadata import version

        return version(_NAME)
    except Exception:
        return "0"


def _from_dist_info() -> str | None:
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in sorted(names):
            stem, dot, ext = name.rpartition(".")
            if not dot or ext != "dist-info" or stem.split("-", 1)[0].lower() != _NAME:
                continue
            return _metadata_version(os.path.join(entry or ".", name, "METADATA"))
    return None


def _metadata_version(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    break  # the headers end at the first blank line
                key, sep, value = line.partition(":")
                if sep and key.strip().lower() == "version":
                    return value.strip() or None
    except OSError:
        return None
    return None
