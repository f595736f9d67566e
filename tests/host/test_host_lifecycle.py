"""The Host's life: configuration, home, the synchronous facade, and nothing left behind."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.procs import assert_process_gone, wait_process_gone

from mcphost.host import (
    Home,
    Host,
    HostConfig,
    HostEvent,
    PluginSource,
    SyncHost,
    default_home,
    load_config,
)
from mcphost.sdk import ConfigError, ToolError


def test_a_closed_sync_host_leaves_no_thread_of_its_own_running(
    home_dir: Path,
    plugin_dirs: dict[str, Path],
    host_config: Callable[..., HostConfig],
    no_leftover_workers: None,
) -> None:
    """Closing its loop does not wait for the threads the host handed work to: a
    SyncHost ends them before it returns (the jail thread, shared by the process, stays)."""
    before = set(threading.enumerate())
    with SyncHost(
        home_dir,
        config=host_config(),
        plugin_dirs=[plugin_dirs["textkit"]],
        environment=False,
        registry=False,
    ) as host:
        assert host.call("textkit.upper", {"text": "sync"}) == "SYNC"
    left = [
        t.name
        for t in threading.enumerate()
        if t not in before and t.is_alive() and t.name != "mcphost-jails"
    ]
    assert left == []


def test_sync_host_calls_streams_and_lists_tools_from_plain_code(
    home_dir: Path,
    plugin_dirs: dict[str, Path],
    host_config: Callable[..., HostConfig],
    no_leftover_workers: None,
) -> None:
    with SyncHost(
        home_dir,
        config=host_config(),
        plugin_dirs=[plugin_dirs["textkit"], plugin_dirs["mathkit"]],
        environment=False,
        registry=False,
    ) as host:
        assert host.call("textkit.upper", {"text": "sync"}) == "SYNC"
        assert list(host.stream("textkit.count_to", {"n": 4})) == [0, 1, 2, 3]
        # Leaving a stream early is fine, and the host goes on serving.
        for item in host.stream("textkit.count_to", {"n": 100_000}):
            if item == 2:
                break
        assert "mathkit.add" in {t.name for t in host.tools()}
        with pytest.raises(ToolError) as info:
            host.call("mathkit.stats", {"values": []})
        assert info.value.code == "empty_input"
        pids = [s["pid"] for s in host.stats()]
        assert len(pids) == 2 and all(pids)
    for pid in pids:
        assert_process_gone(pid, 5)


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("call_timout = 3\n", "call_timout: unknown key (valid keys here: isolation,"),
        ("[limits]\nmemory_mb = 'lots'\n", "limits.memory_mb"),
        ("[limits]\nmemory = 100\n", "limits.memory"),
        ("max_restarts = -1\n", "max_restarts"),
        ("isolation = 'docker'\n", "isolation"),
        ("[features]\nteleport = true\n", "features.teleport"),
    ],
)
def test_a_bad_configuration_key_or_value_is_named_in_the_error(
    tmp_path: Path, toml: str, named: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert named in info.value.message
    assert str(path) in info.value.message
    assert "docs/operators.md" in info.value.message
    assert info.value.exit_code == 2


def test_an_unknown_key_error_lists_the_keys_valid_in_its_table(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[limits]\nmemmory_mb = 100\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "limits.memmory_mb: unknown key" in info.value.message
    assert "memory_mb, cpu_seconds, open_files" in info.value.message


def test_a_new_home_is_private_to_its_owner(tmp_path: Path) -> None:
    home = Home(tmp_path / "fresh" / "home").ensure()
    assert stat.S_IMODE(home.root.stat().st_mode) == 0o700


def test_a_configuration_file_that_is_not_toml_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("isolation = \n")
    with pytest.raises(ConfigError, match="is not valid TOML") as info:
        load_config(path)
    assert str(path) in info.value.message


def test_a_missing_configuration_file_means_the_defaults(tmp_path: Path) -> None:
    cfg = load_config(tmp_path / "absent.toml")
    assert cfg == HostConfig()
    assert cfg.limits.memory_mb == 1024 and cfg.isolation == "auto"


def test_the_host_reads_its_configuration_from_the_home_and_refuses_a_bad_one(
    home_dir: Path, plugin_dirs: dict[str, Path]
) -> None:
    (home_dir / "config.toml").write_text("allow_unsigned = true\nisolation = 'rlimits'\n")

    async def good() -> HostConfig:
        async with Host(home_dir, plugin_dirs=[plugin_dirs["textkit"]], environment=False) as host:
            assert await host.call("textkit.echo", {"text": "x"}) == "x"
            return host.config

    cfg = asyncio.run(good())
    assert cfg.allow_unsigned is True and cfg.isolation == "rlimits"

    (home_dir / "config.toml").write_text("[policy]\nnetwrk = false\n")

    async def bad() -> None:
        async with Host(home_dir, environment=False):
            raise AssertionError("the host must not start")

    with pytest.raises(ConfigError, match=r"policy\.netwrk"):
        asyncio.run(bad())


def test_requiring_namespaces_without_a_namespace_backend_refuses_to_start(
    home_dir: Path, host_config: Callable[..., HostConfig]
) -> None:
    async def scenario() -> None:
        async with Host(home_dir, config=host_config(require_namespaces=True), environment=False):
            raise AssertionError("the host must not start")

    with pytest.raises(ConfigError) as info:
        asyncio.run(scenario())
    assert "require_namespaces" in info.value.message
    assert "isolation = 'rlimits' has none" in info.value.message  # what to change


def test_the_home_comes_from_the_argument_then_mcphost_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCPHOST_HOME", str(tmp_path / "from-env"))
    assert default_home() == tmp_path / "from-env"
    assert Home().root == (tmp_path / "from-env").resolve()
    assert Home(tmp_path / "given").root == (tmp_path / "given").resolve()
    monkeypatch.delenv("MCPHOST_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_home() == tmp_path / "xdg" / "mcphost"
    made = Home(tmp_path / "new").ensure()
    for d in (made.keys_dir, made.store_dir, made.versions_dir, made.data_dir, made.run_dir):
        assert d.is_dir()


def test_a_host_can_be_started_and_closed_again(
    make_host: Callable[..., Host], plugin_dirs: dict[str, Path], no_leftover_workers: None
) -> None:
    async def scenario() -> tuple[list[str], list[int]]:
        host = make_host(plugin_dirs=[plugin_dirs["textkit"]])
        out, pids = [], []
        for _ in range(2):
            async with host:
                out.append(await host.call("textkit.upper", {"text": "again"}))
                (stats,) = host.stats()
                assert stats["state"] == "running"
                pids.append(stats["pid"])
            # Closed: its worker is gone and it shows no plugin as running any more.
            await wait_process_gone(pids[-1], 10)
            assert host.stats() == []
        return out, pids

    out, pids = asyncio.run(scenario())
    assert out == ["AGAIN", "AGAIN"]
    assert pids[0] != pids[1]  # the second start started a worker of its own


def test_a_script_that_leaves_a_sync_stream_early_exits_promptly(
    tmp_path: Path, plugin_dirs: dict[str, Path]
) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        "import sys, time\n"
        "from mcphost.host import HostConfig, SyncHost\n"
        "with SyncHost(sys.argv[1], config=HostConfig(isolation='rlimits', allow_unsigned=True),\n"
        "              plugin_dirs=[sys.argv[2]], environment=False, registry=False) as host:\n"
        "    items = host.stream('textkit.count_to', {'n': 100000})\n"
        "    for item in items:\n"
        "        if item == 3:\n"
        "            break\n"
        "    time.sleep(0.5)  # the stream runs ahead as far as its backpressure lets it\n"
        "    items.close()\n"
        "    print('left at', item, flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "home"), str(plugin_dirs["textkit"])],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "left at 3"


NOTE = """
from mcphost.sdk import Context, Plugin

plugin = Plugin("note")


@plugin.tool
def note(ctx: Context) -> str:
    ctx.info("noted")
    return "ok"
"""


def test_sync_host_reads_the_hosts_state_on_its_loop_never_beside_a_step_running_there(
    home_dir: Path,
    write_plugin_source: Callable[..., PluginSource],
    host_config: Callable[..., HostConfig],
    no_leftover_workers: None,
) -> None:
    source = write_plugin_source("note", NOTE)
    with SyncHost(
        home_dir, config=host_config(), sources=[source], environment=False, registry=False
    ) as host:
        read: dict[str, Any] = {}
        finished = threading.Event()
        held: list[bool] = []

        def reader() -> None:
            read["tools"] = host.tools()
            read["stats"] = host.stats()
            finished.set()

        def on_event(event: HostEvent) -> None:
            # Runs on the host's loop, in the middle of its work: a read from another
            # thread must wait until the loop is free.
            if event.kind == "log" and not held:
                threading.Thread(target=reader).start()
                held.append(finished.wait(1.0))

        host.add_listener(on_event)
        assert host.call("note.note") == "ok"
        assert finished.wait(10)
    assert held == [False], "tools() and stats() read the host's state beside its loop"
    assert [t.name for t in read["tools"]] == ["note.note"]
    assert read["stats"][0]["plugin"] == "note" and read["stats"][0]["state"] == "running"
