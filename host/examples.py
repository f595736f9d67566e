"""The example plugins as build inputs: find them, copy one at another version, build wheels.

``mcphost demo`` builds every example with pip, plus a second textkit version whose
``echo`` answers visibly differently, so a hot swap can be seen from the answers. The
registry tests and benchmark make the same kind of variant.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mcphost.sdk.errors import ConfigError

__all__ = ["EXAMPLES", "build_wheels", "copy_example", "find_examples"]

EXAMPLES = ("textkit", "mathkit", "notes")

#: Build leftovers that never belong in a copy of a project.
_LEFTOVERS = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", "*.pyc")

#: textkit's ``echo`` tool: its signature, optional docstring and ``return text``.
_ECHO = re.compile(r'(def echo\(text: str\) -> str:\n(?:    """.*?"""\n)?    return text)\n', re.S)


def find_examples(explicit: Path | None = None) -> Path:
    """The example_plugins folder: given, ``$MCPHOST_EXAMPLES``, ./example_plugins, the
    copy installed with mcphost (its package data), or the source checkout this module
    runs from."""
    here = Path(__file__)
    candidates = [
        explicit,
        Path(os.environ["MCPHOST_EXAMPLES"]) if os.environ.get("MCPHOST_EXAMPLES") else None,
        Path.cwd() / "example_plugins",
        here.with_name("example_plugins"),
        here.resolve().parents[1] / "example_plugins",
    ]
    for c in candidates:
        if c is not None and all((c / n / "pyproject.toml").is_file() for n in EXAMPLES):
            return c
    if explicit is not None:
        raise ConfigError(
            f"{explicit} does not hold the example plugins (textkit, mathkit, notes, each "
            "with its pyproject.toml); pass the example_plugins folder of an mcphost "
            "checkout, or leave --examples out to use the copy installed with mcphost"
        )
    raise ConfigError(
        f"cannot find the example plugins: this mcphost installation has no copy of them "
        f"in {here.with_name('example_plugins')}; reinstall mcphost, or pass --examples DIR"
    )


def copy_example(
    source: Path, dest: Path, *, version: str | None = None, echo_suffix: str = ""
) -> Path:
    """Copy the plugin project ``source`` to ``dest`` without build leftovers.

    With ``version``, the copy's distribution and its packages' ``__version__`` say that
    version. With ``echo_suffix``, its ``echo`` tool (textkit's) appends the suffix to
    every answer, so a caller can tell which version answered.
    """
    shutil.copytree(source, dest, ignore=_LEFTOVERS)
    if version is not None:
        pyproject = dest / "pyproject.toml"
        text, n = re.subn(
            r'^version = ".*"$', f'version = "{version}"', pyproject.read_text(), flags=re.M
        )
        if n != 1:
            raise ConfigError(f"{pyproject} has no single `version = ...` line to change")
        pyproject.write_text(text)
        for init in dest.glob("*/__init__.py"):
            code = init.read_text()
            init.write_text(
                re.sub(r'^__version__ = ".*"$', f'__version__ = "{version}"', code, flags=re.M)
            )
    if echo_suffix:
        changed = False
        for init in dest.glob("*/__init__.py"):
            code, n = _ECHO.subn(lambda m: f"{m[1]} + {echo_suffix!r}\n", init.read_text())
            if n:
                init.write_text(code)
                changed = True
        if not changed:
            raise ConfigError(
                f"{source} has no `echo(text: str) -> str` tool returning its text; "
                "only textkit's echo can be given a suffix"
            )
    return dest


def _can_build_offline() -> bool:
    """Whether setuptools here can build a wheel without fetching build dependencies."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    try:
        setuptools_version = Version(version("setuptools"))
    except PackageNotFoundError:
        return False
    if setuptools_version >= Version("70.1"):
        return True
    try:
        version("wheel")
    except PackageNotFoundError:
        return False
    return True


def _pip(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def _build_requirements(projects: Iterable[Path]) -> list[str]:
    """Every project's ``[build-system] requires``, and ``wheel`` (which setuptools older
    than 70.1 needs to build a wheel at all)."""
    reqs: set[str] = {"wheel"}
    for project in projects:
        with open(project / "pyproject.toml", "rb") as f:
            reqs.update(tomllib.load(f).get("build-system", {}).get("requires", ["setuptools"]))
    return sorted(reqs)


def _build_env(projects: Iterable[Path], out: Path) -> dict[str, str] | None:
    """An environment for pip whose ``PYTHONPATH`` holds the projects' build requirements,
    installed once for them all (pip's build isolation would install them once per
    project); ``None`` when they cannot be installed (pip then isolates each build)."""
    target = out / ".build-requirements"
    if _pip(["install", "--target", str(target), *_build_requirements(projects)]).returncode:
        return None
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *([path] if path else [])])}


def _pip_wheel(project: Path, out: Path, isolation: list[str], env: dict[str, str] | None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    args = ["wheel", "--no-deps", *isolation, "-w", str(out), str(project)]
    proc = _pip(args, env)
    if proc.returncode != 0:
        raise ConfigError(
            f"building a wheel of {project} with pip failed:\n{proc.stderr[-2000:]}\n"
            "pip needs setuptools (and, for setuptools older than 70.1, wheel) here or "
            "from its index"
        )
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != 1:
        raise ConfigError(f"building {project} left {len(wheels)} wheels in {out}, not one")
    return wheels[0]


def build_wheels(projects: Mapping[str, Path], out: Path) -> dict[str, Path]:
    """Build a wheel of each project with ``pip wheel``, all at once; returns the same
    keys mapped to the wheel files (each in its own directory under ``out``).

    pip builds in the project's folder, so pass copies (:func:`copy_example`) to keep a
    checkout clean. Where setuptools here cannot build offline (a fresh virtualenv), the
    build requirements come from pip's configured index, installed once for all projects.
    """
    out.mkdir(parents=True, exist_ok=True)
    offline = _can_build_offline()
    env = None if offline else _build_env(projects.values(), out)
    isolation = ["--no-build-isolation"] if offline or env is not None else []
    with ThreadPoolExecutor(max_workers=max(1, len(projects))) as pool:
        futures = {
            key: pool.submit(_pip_wheel, project, out / key, isolation, env)
            for key, project in projects.items()
        }
        return {key: f.result() for key, f in futures.items()}
