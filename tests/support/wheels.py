"""Building, signing and installing real plugin wheels.

Every wheel a test uses is built from a real project (pip, or setuptools' PEP 517
backend as pip calls it), signed with :func:`mcphost.security.sign_wheel` and installed
with pip or the real ``mcphost plugin install``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mcphost.security import Permissions, PrivateKey, sign_wheel

__all__ = ["build_wheel", "build_wheels", "install_target", "pip", "signed"]


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
    """``pip wheel --no-deps --no-build-isolation`` of ``project`` into ``out``; the
    wheel's path (the one built before, when ``out`` already holds the same wheel)."""
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("*.whl"))
    pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(project))
    new = set(out.glob("*.whl")) - before
    if not new:  # the same wheel was built before into this directory
        return next(p for p in out.glob("*.whl") if project.name.replace("-", "_") in p.name)
    (wheel,) = new
    return wheel


#: Builds each project given with its PEP 517 backend (setuptools, as pip would call it).
_BUILD = """\
import os, sys
from setuptools import build_meta
out = os.path.abspath(sys.argv[1])
for project in sys.argv[2:]:
    os.chdir(project)
    build_meta.build_wheel(out)
"""


def build_wheels(projects: Sequence[Path], out: Path, *, processes: int = 2) -> list[Path]:
    """Wheels of many small projects built into ``out``, with setuptools' backend called
    directly in ``processes`` interpreters at once (several times faster than one
    ``pip wheel`` each); the new wheels, sorted. Building writes into each project."""
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("*.whl"))
    batches = [list(projects[i::processes]) for i in range(processes)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _BUILD, str(out), *map(str, batch)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for batch in batches
        if batch
    ]
    for proc in procs:
        output, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"building wheels failed:\n{output}")
    return sorted(set(out.glob("*.whl")) - before)


def signed(
    wheel: Path, key: PrivateKey, permissions: Permissions, out: Path, sequence: int = 1
) -> Path:
    """``wheel`` signed by ``key`` with ``permissions``, written into ``out`` (created
    when missing)."""
    out.mkdir(parents=True, exist_ok=True)
    return sign_wheel(wheel, key, permissions=permissions, sequence=sequence, out=out)


def install_target(wheel: Path, target: Path) -> Path:
    """``pip install --no-deps --target TARGET WHEEL``: a directory to run the plugin
    from (``--plugin-dir``, ``MCPHOST_PLUGIN_PATH``); returns ``target``."""
    pip("install", "--no-deps", "--target", os.fspath(target), os.fspath(wheel))
    return target
