"""Helpers for the security suite: tamper with real wheels and read their members
(support.wheels builds and installs them)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "example_plugins"
#: A fixed signing time, so tests can pass ``now`` explicitly.
SIGNED_AT = 1_800_000_000.0
YEAR = 365 * 24 * 3600.0
NOW = SIGNED_AT + 3600


def rewrite_wheel(
    src: Path,
    dst: Path,
    replace: Mapping[str, bytes | None] | None = None,
    add: Mapping[str, bytes] | None = None,
    tweak: Callable[[zipfile.ZipInfo], None] | None = None,
) -> Path:
    """Copy a wheel, replacing (``None``: dropping) and adding members; nothing re-signed."""
    replace = dict(replace or {})
    buf = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename in replace:
                data = replace.pop(info.filename)
                if data is None:
                    continue
            else:
                data = zin.read(info)
            zout.writestr(info, data)
        for name, data in {**replace, **(add or {})}.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o100644 << 16
            if tweak is not None:
                tweak(info)
            zout.writestr(info, data)
    dst.write_bytes(buf.getvalue())
    return dst


def member(wheel: Path, name: str) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(name)


def members(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()
