"""Helpers for the security suite: build, install and tamper with real wheels."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "example_plugins"
#: A fixed signing time, so tests can pass ``now`` explicitly.
SIGNED_AT = 1_800_000_000.0
YEAR = 365 * 24 * 3600.0
NOW = SIGNED_AT + 3600


def pip(*args: str) -> None:
    """Run pip in this interpreter, quietly, failing loudly with its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pip {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")


def build_wheel(project: Path, out: Path) -> Path:
    """``pip wheel --no-deps --no-build-isolation`` of ``project`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("*.whl"))
    pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(project))
    (new,) = set(out.glob("*.whl")) - before
    return new


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
