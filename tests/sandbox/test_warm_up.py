"""What a host does before its first worker start: the warm-up that ``mcphost serve``
begins while the host is imported, and the worker's bytecode written by the host.

The warm-up moves the sandbox's probe (``bwrap --version``, a trivial jail) and the
seccomp filter (``ldconfig -p`` to find libseccomp) off the first start's path: after it,
choosing the backend and building the filter run no process at all. The processes are
seen through the interpreter's audit events (``subprocess.Popen``), not counted by
replacing anything.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from bwrap_check import require_bwrap

import mcphost.sandbox.bwrap as bwrap
import mcphost.sandbox.isolation as isolation
import mcphost.sandbox.seccomp as seccomp
import mcphost.sandbox.worker_sync
from mcphost.sandbox.jail import choose_backend, warm_up

_started: list[list[str]] | None = None
_lock = threading.Lock()


def _on_audit(event: str, args: tuple[object, ...]) -> None:
    if event == "subprocess.Popen":
        with _lock:
            if _started is not None:
                argv = args[1]
                _started.append([str(a) for a in argv] if isinstance(argv, list) else [])


sys.addaudithook(_on_audit)


@pytest.fixture
def processes() -> Iterator[list[list[str]]]:
    """The argv of every process this interpreter starts while the test runs, with the
    probe and the filter forgotten first (as in a fresh host process)."""
    global _started
    bwrap._PROBED.clear()
    seccomp._build_program.cache_clear()
    with _lock:
        _started = []
    try:
        yield _started
    finally:
        with _lock:
            _started = None


def _bwrap_runs(started: list[list[str]]) -> list[list[str]]:
    return [argv for argv in started if argv and argv[0].endswith("bwrap")]


@pytest.mark.bwrap
def test_after_the_warm_up_the_first_start_probes_nothing(
    processes: list[list[str]],
) -> None:
    require_bwrap()  # probes: forget it again, as a fresh host process would
    bwrap._PROBED.clear()
    processes.clear()
    warm_up("auto").join(timeout=60)
    assert _bwrap_runs(processes), "the warm-up probed bubblewrap"
    processes.clear()

    backend = choose_backend("auto")
    program = seccomp.filter_program()

    assert backend.name == "bwrap"
    assert program  # the filter, built by the warm-up
    assert processes == [], "choosing the backend and building the filter ran no process"


@pytest.mark.bwrap
def test_a_start_during_the_warm_up_waits_for_its_probe_rather_than_probing_again(
    processes: list[list[str]],
) -> None:
    require_bwrap()  # probes: forget it again, as a fresh host process would
    bwrap._PROBED.clear()
    processes.clear()
    thread = warm_up("auto")
    # The first start asks at once, while the warm-up's probe is (most likely) running.
    ok, why = choose_backend("auto").available()
    thread.join(timeout=60)
    assert ok, why
    versions = [argv for argv in _bwrap_runs(processes) if "--version" in argv]
    assert len(versions) == 1, f"one probe in all: {processes}"


@pytest.mark.bwrap
def test_no_jail_is_probed_when_the_configuration_says_rlimits(
    processes: list[list[str]],
) -> None:
    warm_up("rlimits").join(timeout=60)
    assert _bwrap_runs(processes) == []
    assert bwrap._PROBED == {}


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

    isolation.write_worker_bytecode()

    assert cached.exists(), "a worker now loads bytecode instead of compiling the module"
    assert _is_current(source, cached)


@pytest.mark.usefixtures("warm_up_thread_free")
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


@pytest.fixture
def warm_up_thread_free() -> None:
    """Nothing else in this process writes bytecode meanwhile (no warm-up thread left
    running by an earlier test)."""
    for t in threading.enumerate():
        if t.name == "mcphost-warm-up":
            t.join(timeout=60)
