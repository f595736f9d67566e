"""Fixtures for the sandbox suite: plugins written into tmp_path, workers spawned for real."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from mcphost.sandbox import Limits, RlimitBackend, WorkerSpec

#: Writes ``<name>.py`` holding ``source`` into a fresh directory; returns a WorkerSpec.
PluginWriter = Callable[..., WorkerSpec]


@pytest.fixture
def write_plugin(tmp_path: Path) -> PluginWriter:
    """Write a one-module plugin into tmp_path and describe a worker that serves it.

    The module is named after the plugin; its code is dedented, and ``from mcphost.sdk
    import *``-style imports are up to the caller.
    """
    counter = 0

    def write(
        name: str,
        source: str,
        *,
        entry: str | None = None,
        limits: Limits | None = None,
        max_frame: int = 16 * 1024 * 1024,
    ) -> WorkerSpec:
        nonlocal counter
        counter += 1
        code = tmp_path / f"code-{name}-{counter}"
        code.mkdir()
        (code / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        return WorkerSpec(
            plugin=name,
            version="1.0.0",
            entry=entry or f"{name}:plugin",
            paths=[str(code)],
            data_dir=str(tmp_path / "data" / name),
            work_dir=str(tmp_path / "run" / f"{name}-{counter}"),
            limits=limits or Limits(),
            max_frame=max_frame,
        )

    return write


@pytest.fixture
def backend() -> RlimitBackend:
    """The rlimits backend: available everywhere, so these tests never skip."""
    return RlimitBackend()
