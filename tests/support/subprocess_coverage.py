"""Coverage of what the test suite runs in subprocesses: workers, `mcphost serve`, CLI runs.

coverage.py measures Python subprocesses by itself (``patch = ["subprocess"]`` in
pyproject.toml): it passes its configuration in ``COVERAGE_PROCESS_CONFIG``, and any
Python process started with that variable measures itself and saves its data next to
the suite's (``parallel = true``). That reaches ``mcphost serve`` and the CLI, but not
workers: the sandbox gives each one a clean environment and, in the bubblewrap jail, no
writable folder but its own. While the suite measures coverage, and only then, this
module changes that in each process that starts workers:

* a worker's clean environment also holds ``COVERAGE_PROCESS_CONFIG`` (the suite's
  configuration, less this module, which a worker cannot import);
* a jailed worker gets coverage's data folder (``data_file``'s folder, made writable for
  the worker's uid) bound writable at ``/coverage``, its Landlock rules allow writing
  there, and its configuration says to save there.

In the test process ``tests/conftest.py`` calls :func:`install` and :func:`export`. In
the processes the tests start, coverage loads this module as a plugin (:func:`export`
names it in the configuration they inherit and puts its folder on their
``PYTHONPATH``), and it changes the sandbox's modules when they are imported there.
Nothing here is part of mcphost: the product's jail never grants such a folder nor
passes such a variable.

Tests that check a worker's exact environment compare :func:`without_coverage` of it;
tests that start ``mcphost serve`` with an environment of their own add
:func:`environment` to it.
"""

from __future__ import annotations

import base64
import importlib.abc
import importlib.machinery
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

#: The variable coverage.py starts from in a new process.
VARIABLE = "COVERAGE_PROCESS_CONFIG"
#: This module's name as coverage loads it in subprocesses.
PLUGIN = "subprocess_coverage"
#: The sandbox modules that build a worker's launch: the rlimits backend and bubblewrap.
TARGETS = ("mcphost.sandbox.jail", "mcphost.sandbox.bwrap")
#: Where a jailed worker finds coverage's data folder.
JAIL_FOLDER = "/coverage"


def _decode(raw: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(base64.b64decode(raw))
    return data


def _encode(data: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


def worker_config(folder: str | None = None) -> str | None:
    """The coverage configuration workers get (``None`` when nothing is measured): the
    suite's, without this plugin, saving into ``folder`` when given (in a jail)."""
    raw = os.environ.get(VARIABLE)
    if not raw:
        return None
    data = _decode(raw)
    data["plugins"] = [p for p in data.get("plugins", []) if p != PLUGIN]
    if folder is not None:
        data["data_file"] = os.path.join(folder, os.path.basename(data["data_file"]))
    return _encode(data)


def data_dir() -> str | None:
    """The folder coverage's data files go to (``None`` when nothing is measured)."""
    raw = os.environ.get(VARIABLE)
    return os.path.dirname(os.path.abspath(_decode(raw)["data_file"])) if raw else None


def without_coverage(env: dict[str, str]) -> dict[str, str]:
    """``env`` less the coverage variable this suite gives workers; any other value of it
    (the host's own, say) stays, so a test still sees it leak."""
    if VARIABLE in env and env[VARIABLE] in (worker_config(), worker_config(JAIL_FOLDER)):
        return {k: v for k, v in env.items() if k != VARIABLE}
    return env


def environment() -> dict[str, str]:
    """What a process the tests start with an environment of their own needs to be
    measured too: coverage's variable and this module's folder (empty when nothing is
    measured)."""
    return {k: os.environ[k] for k in (VARIABLE, "PYTHONPATH") if VARIABLE in os.environ}


def install() -> None:
    """Measure the workers this process starts, if it measures coverage itself."""
    folder = data_dir()
    if folder is None:
        return
    for name in TARGETS:
        module = sys.modules.get(name)
        if module is not None:
            _patch(module, folder)
    if not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport(folder))


def export() -> None:
    """In the test process: make the processes the tests start measure their workers."""
    raw = os.environ.get(VARIABLE)
    folder = data_dir()
    if not raw or folder is None:
        return
    # Jailed workers run as another uid: they may add files, never remove others'.
    os.makedirs(folder, exist_ok=True)
    os.chmod(folder, 0o1777)
    data = _decode(raw)
    if PLUGIN not in data.get("plugins", []):
        data["plugins"] = [*data.get("plugins", []), PLUGIN]
        os.environ[VARIABLE] = _encode(data)
    here = str(Path(__file__).resolve().parent)
    path = os.environ.get("PYTHONPATH", "")
    if here not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join([here, *([path] if path else [])])


def coverage_init(reg: Any, options: dict[str, str]) -> None:
    """coverage.py's plugin entry: called where coverage starts with the suite's
    configuration (a process the tests started)."""
    install()


def _patch(module: ModuleType, folder: str) -> None:
    """Make ``module``'s backend launch measured workers."""
    if getattr(module, "_measured_by_tests", False):
        return
    module._measured_by_tests = True  # type: ignore[attr-defined]
    jailed = module.__name__ == "mcphost.sandbox.bwrap"
    config = worker_config(JAIL_FOLDER if jailed else None)
    assert config is not None
    clean_env = module.clean_env

    def measured_env(
        extra: dict[str, str] | None = None, passthrough: list[str] | None = None
    ) -> dict[str, str]:
        return {**clean_env(extra, passthrough), VARIABLE: config}

    module.clean_env = measured_env  # type: ignore[attr-defined]
    if not jailed:
        return
    mount_args, rules_for = module.mount_args, module.rules_for

    def mounts_and_coverage(spec: Any, system: list[str]) -> list[str]:
        return [*mount_args(spec, system), "--bind", folder, JAIL_FOLDER]

    def rules_and_coverage(read: list[str], write: list[str], network: Any) -> Any:
        return rules_for(read, [*write, JAIL_FOLDER], network)

    module.mount_args = mounts_and_coverage  # type: ignore[attr-defined]
    module.rules_for = rules_and_coverage  # type: ignore[attr-defined]


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches a sandbox module right after it is first imported."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            _patch(module, self.folder)

        loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec
