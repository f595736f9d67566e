"""The bytecode a worker loads: the host writes it for mcphost's own worker-side modules.

Workers run with ``-B`` (they never write bytecode), and the host never imports the
modules only workers import (the worker loop, its I/O, its thread pool); where no install
step compiled them (an editable install), every worker would compile them from source at
each start. The host writes that bytecode before its first worker, unless it writes none
itself.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import mcphost.sandbox.isolation as isolation
import mcphost.sandbox.worker_sync
from mcphost.host.config import HostConfig
from mcphost.host.isolation_backend import isolation_backend


@pytest.fixture
def bytecode_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that writes bytecode (the suite may run with PYTHONDONTWRITEBYTECODE)."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.setattr(isolation, "_BYTECODE_WRITTEN", False)


def _worker_only_module_bytecode() -> tuple[Path, Path]:
    """A module only workers import (the host never does), and where its bytecode goes."""
    source = mcphost.sandbox.worker_sync.__file__
    assert source is not None
    return Path(source), Path(importlib.util.cache_from_source(source))


def _is_current(source: Path, cached: Path) -> bool:
    """Whether Python would load ``cached`` for ``source``: the source's mtime and size,
    or (when ``SOURCE_DATE_EPOCH`` asks for hash-based bytecode) its hash."""
    data = cached.read_bytes()
    if data[:4] != importlib.util.MAGIC_NUMBER:
        return False
    if int.from_bytes(data[4:8], "little") & 1:
        return data[8:16] == importlib.util.source_hash(source.read_bytes())
    st = source.stat()
    mtime, size = int.from_bytes(data[8:12], "little"), int.from_bytes(data[12:16], "little")
    return mtime == int(st.st_mtime) & 0xFFFFFFFF and size == st.st_size & 0xFFFFFFFF


@pytest.mark.usefixtures("bytecode_allowed")
def test_the_host_writes_the_bytecode_of_the_modules_only_workers_import() -> None:
    source, cached = _worker_only_module_bytecode()
    cached.unlink(missing_ok=True)

    # What every worker start of a host asks first: which backend the workers run under.
    isolation_backend(HostConfig(isolation="rlimits"))

    assert cached.exists(), "a worker now loads bytecode instead of compiling the module"
    assert _is_current(source, cached)


def test_a_host_that_writes_no_bytecode_writes_none_for_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.setattr(isolation, "_BYTECODE_WRITTEN", False)
    _, cached = _worker_only_module_bytecode()
    kept = cached.read_bytes() if cached.exists() else None
    cached.unlink(missing_ok=True)
    try:
        isolation.write_worker_bytecode()
        assert not cached.exists()
    finally:
        if kept is not None:
            cached.parent.mkdir(exist_ok=True)
            cached.write_bytes(kept)
