"""A real example plugin served by the Host with every worker inside the bubblewrap jail."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from bwrap_check import has_cgroups, has_root, require_bwrap, require_cgroups

from mcphost.host import Host, HostConfig, PluginSource
from mcphost.sandbox.bwrap import NOBODY, BubblewrapBackend
from mcphost.sdk import WorkerCrashed

pytestmark = pytest.mark.bwrap


def test_notes_plugin_saves_and_reads_a_note_inside_the_jail(
    home_dir: Path, plugin_dirs: dict[str, Path]
) -> None:
    require_bwrap()

    async def scenario() -> tuple[str, str, list[str], list[str]]:
        async with Host(
            home_dir,
            # Signatures are not what this test is about; the security suite covers them.
            config=HostConfig(allow_unsigned=True),
            plugin_dirs=[plugin_dirs["notes"]],
            environment=False,
            registry=False,
            isolation="bwrap",
        ) as host:
            saved = await host.call("notes.save", {"title": "jail", "body": "inside"})
            body = await host.call("notes.read", {"title": "jail"})
            titles = await host.call("notes.list", {})
            async with asyncio.timeout(10):  # the watcher's first reading, off the loop
                while "memory_mb" not in host.stats()[0]:
                    await asyncio.sleep(0.01)
            return saved, body, titles, _worker_cgroups(), host.stats()[0]

    saved, body, titles, cgroups, stats = asyncio.run(scenario())
    assert (saved, body, titles) == ("jail", "inside", ["jail"])
    notes = list(home_dir.rglob("jail.json"))
    assert len(notes) == 1, notes
    if has_root("workers drop to an unprivileged uid only when the host is root"):
        # Written by the worker's unprivileged uid, in the only writable data directory.
        assert notes[0].stat().st_uid == NOBODY
    if has_cgroups(BubblewrapBackend()):
        # The worker runs inside its own cgroups (one per controller, or one on v2).
        assert cgroups and all("/mcphost-notes-1.0.0-" in c for c in cgroups), cgroups
        # Memory is the kernel's charge to the worker's cgroup, and says so.
        assert stats["memory_source"] == "cgroup", stats
    else:
        assert stats["memory_source"] in ("pss", "rss"), stats
    assert stats["memory_mb"] > 0 and "rss_mb" not in stats, stats


def test_frames_of_megabytes_cross_a_jailed_worker_intact_both_ways(
    home_dir: Path, plugin_dirs: dict[str, Path]
) -> None:
    """The buffers kept between large frames (an anonymous map read into, a bytearray
    resized in place through CPython's C API) work under the jail's seccomp filter and
    Landlock rules as they do outside it."""
    require_bwrap()
    texts = ["".join(chr(65 + i % 26) for i in range(n)) for n in (3_000_000, 100, 5_000_000)]

    async def scenario() -> list[bool]:
        async with Host(
            home_dir,
            config=HostConfig(allow_unsigned=True),
            plugin_dirs=[plugin_dirs["textkit"]],
            environment=False,
            registry=False,
            isolation="bwrap",
        ) as host:
            return [await host.call("textkit.echo", {"text": t}) == t for t in texts * 2]

    assert asyncio.run(scenario()) == [True] * 6


HOG = """
from mcphost.sdk import Plugin

plugin = Plugin("hog")


@plugin.tool()
def fill(mb: int) -> int:
    \"\"\"Write ``mb`` MiB into /tmp: a tmpfs, charged to the worker's memory cgroup
    but not to its address space.\"\"\"
    block = b"x" * (1024 * 1024)
    for i in range(mb):
        with open(f"/tmp/f{i}", "wb") as f:
            f.write(block)
    return mb
"""


def test_a_worker_the_cgroups_oom_killer_ends_is_described_as_such(
    home_dir: Path, tmp_path: Path
) -> None:
    require_bwrap()
    require_cgroups(BubblewrapBackend())
    code = tmp_path / "hog"
    code.mkdir()
    (code / "hog.py").write_text(HOG)
    source = PluginSource(
        name="hog",
        version="1.0.0",
        entry="hog:plugin",
        paths=[str(code)],
        origin="directory",
        root=str(code),
    )

    async def scenario() -> WorkerCrashed:
        async with Host(
            home_dir,
            config=HostConfig(allow_unsigned=True, limits={"memory_mb": 128, "tmp_mb": 512}),
            sources=[source],
            environment=False,
            registry=False,
            isolation="bwrap",
        ) as host:
            with pytest.raises(WorkerCrashed) as info:
                await host.call("hog.fill", {"mb": 400})
            return info.value

    error = asyncio.run(scenario())
    assert "exited on signal SIGKILL" in error.message, error.message
    assert "out-of-memory killer" in error.message, error.message
    assert "memory limit of 128 MiB" in error.message, error.message
    assert "or by an operator" not in error.message


def _worker_cgroups() -> list[str]:
    """The pids/memory cgroup lines of this process's jailed Python worker (not another
    Python child of the test run's, nor the bubblewrap process that names it)."""
    import psutil

    for proc in psutil.Process().children(recursive=True):
        if proc.name().startswith("python") and "mcphost.sandbox.worker" in " ".join(
            proc.cmdline()
        ):
            lines = Path(f"/proc/{proc.pid}/cgroup").read_text().splitlines()
            return [
                line
                for line in lines
                if set(line.split(":")[1].split(",")) & {"pids", "memory", ""} and "mcphost" in line
            ]
    return []
