"""Worker pools: a plugin run as several replicas behind one name, with real workers:
calls spread over the replicas, a crashed replica restarts while the others serve, and a
swap replaces every replica without a failed call (or none of them)."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mcphost.host import Host, HostConfig, PluginSource
from mcphost.sdk.errors import ConfigError, MCPHostError

SOURCE = '''
import os, time
from mcphost.sdk import Plugin

plugin = Plugin("pooled")
VERSION = "{version}"


@plugin.tool
def where(pause: float = 0.0) -> dict:
    """The pid and version of the worker that ran the call."""
    if pause:
        time.sleep(pause)
    return {{"pid": os.getpid(), "version": VERSION}}


@plugin.tool
def crash() -> None:
    """Ends the worker's process at once."""
    os._exit(3)
'''


def pooled_source(tmp_path: Path, version: str, *, broken: bool = False) -> PluginSource:
    code = tmp_path / f"pooled-{version}"
    code.mkdir(exist_ok=True)
    text = textwrap.dedent(SOURCE.format(version=version))
    if broken:
        text = "raise ImportError('this version cannot load')\n" + text
    (code / "pooled.py").write_text(text, encoding="utf-8")
    return PluginSource(
        name="pooled",
        version=version,
        entry="pooled:plugin",
        paths=[str(code)],
        origin="directory",
        root=str(code),
    )


def pool_host(tmp_path: Path, replicas: int = 2) -> Host:
    config = HostConfig(
        allow_unsigned=True,
        isolation="rlimits",
        plugins={"pooled": {"replicas": replicas}},  # type: ignore[dict-item]
        backoff_initial=0.0,
    )
    return Host(
        tmp_path / "home",
        config=config,
        sources=[pooled_source(tmp_path, "1.0.0")],
        environment=False,
        registry=False,
    )


def plugin_stats(host: Host) -> dict[str, Any]:
    return next(s for s in host.stats() if s["plugin"] == "pooled")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def all_running(host: Host) -> dict[str, Any]:
    """The pool's stats once every replica runs (they start in parallel)."""
    for _ in range(1000):
        stats = plugin_stats(host)
        if all(r["state"] == "running" and r["pid"] for r in stats.get("replicas", [stats])):
            return stats
        await asyncio.sleep(0.01)
    raise AssertionError(f"the replicas did not all start: {plugin_stats(host)}")


async def spread(host: Host, calls: int, pause: float = 0.01) -> Counter[int]:
    got = await asyncio.gather(*(host.call("pooled.where", {"pause": pause}) for _ in range(calls)))
    return Counter(r["pid"] for r in got)


async def test_calls_spread_over_every_replica(tmp_path: Path) -> None:
    async with pool_host(tmp_path, replicas=3) as host:
        await host.call("pooled.where")
        await all_running(host)
        pids = await spread(host, 120)
        pids, stats = pids, plugin_stats(host)
    assert len(pids) == 3, pids  # every replica served
    assert min(pids.values()) >= 10  # and none was left idle while others queued
    replicas = stats["replicas"]
    assert sorted(r["pid"] for r in replicas) == sorted(pids)
    assert all(r["state"] == "running" for r in replicas)
    assert stats["calls"] == sum(r["calls"] for r in replicas) >= 121


async def test_a_crashed_replica_restarts_while_the_others_serve(tmp_path: Path) -> None:
    async with pool_host(tmp_path) as host:
        await host.call("pooled.where")
        await all_running(host)
        before = set(await spread(host, 40))
        crashed = await asyncio.gather(host.call("pooled.crash"), return_exceptions=True)
        # Calls go on at once: the other replica serves them.
        during = await asyncio.gather(
            *(host.call("pooled.where") for _ in range(30)), return_exceptions=True
        )
        await all_running(host)
        after = await spread(host, 60)
        before, after, outcomes, stats = before, after, [crashed[0], *during], plugin_stats(host)
    crashed, *during = outcomes
    assert isinstance(crashed, MCPHostError) and crashed.code == "worker_crashed"
    assert all(isinstance(r, dict) for r in during), during  # no call failed meanwhile
    assert stats["restarts"] == 1
    assert len(after) == 2 and len(set(after) & before) == 1  # one replica is new


async def test_a_swap_replaces_every_replica_without_a_failed_call(tmp_path: Path) -> None:
    async with pool_host(tmp_path) as host:
        await host.call("pooled.where")
        stop = asyncio.Event()
        outcomes: list[Any] = []

        async def caller() -> None:
            while not stop.is_set():
                got = await asyncio.gather(
                    host.call("pooled.where", {"pause": 0.002}), return_exceptions=True
                )
                outcomes.append(got[0])

        callers = [asyncio.ensure_future(caller()) for _ in range(8)]
        await asyncio.sleep(0.1)
        await host.activate(pooled_source(tmp_path, "2.0.0"))
        stop.set()
        await asyncio.gather(*callers)
        after = await asyncio.gather(*(host.call("pooled.where") for _ in range(20)))
        versions = {r["version"] for r in after}
        outcomes, versions, stats = outcomes, versions, plugin_stats(host)
    assert outcomes and all(isinstance(o, dict) for o in outcomes), [
        o for o in outcomes if not isinstance(o, dict)
    ]
    assert {o["version"] for o in outcomes} <= {"1.0.0", "2.0.0"}
    assert versions == {"2.0.0"}
    assert [r["version"] for r in stats["replicas"]] == ["2.0.0", "2.0.0"]


async def test_a_version_that_cannot_start_leaves_every_replica_as_it_was(tmp_path: Path) -> None:
    async with pool_host(tmp_path) as host:
        await host.call("pooled.where")
        failed = await asyncio.gather(
            host.activate(pooled_source(tmp_path, "3.0.0", broken=True)),
            return_exceptions=True,
        )
        after = await asyncio.gather(*(host.call("pooled.where") for _ in range(20)))
        failed, versions, stats = failed[0], {r["version"] for r in after}, plugin_stats(host)
    assert isinstance(failed, MCPHostError) and "cannot load" in failed.message
    assert versions == {"1.0.0"}
    assert [r["version"] for r in stats["replicas"]] == ["1.0.0", "1.0.0"]


async def test_one_replica_is_a_plain_supervisor(tmp_path: Path) -> None:
    async with pool_host(tmp_path, replicas=1) as host:
        await spread(host, 10)
        stats = plugin_stats(host)
    assert "replicas" not in stats and stats["state"] == "running"


@pytest.mark.parametrize("replicas", [0, 65, "two"])
def test_a_replica_count_that_cannot_work_is_refused(tmp_path: Path, replicas: Any) -> None:
    path = tmp_path / "config.toml"
    value = f'"{replicas}"' if isinstance(replicas, str) else replicas
    path.write_text(f"[plugins.pooled]\nreplicas = {value}\n")
    from mcphost.host.config import load_config

    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "plugins.pooled.replicas" in info.value.message


def counting_source(tmp_path: Path, version: str, fail_from: int) -> PluginSource:
    """A version whose n-th load (counted in a file) fails from ``fail_from`` on."""
    source = pooled_source(tmp_path, version)
    counter = tmp_path / f"loads-{version}"
    code = Path(source.root) / "pooled.py"
    # Replicas load at once: the count is written whole (a rename), never seen empty.
    code.write_text(
        "import os as _os\n"
        "from pathlib import Path as _P\n"
        f"_c = _P({str(counter)!r})\n"
        "_n = int(_c.read_text()) + 1 if _c.exists() else 1\n"
        "_t = _c.with_name(f'{_c.name}.{_os.getpid()}')\n"
        "_t.write_text(str(_n))\n"
        "_os.replace(_t, _c)\n"
        f"if _n >= {fail_from}:\n"
        "    raise ImportError(f'load {_n} of this version fails')\n" + code.read_text()
    )
    return source


async def test_a_swap_that_fails_on_a_later_replica_takes_the_earlier_ones_back(
    tmp_path: Path,
) -> None:
    async with pool_host(tmp_path) as host:
        await host.call("pooled.where")
        await all_running(host)
        failed = await asyncio.gather(
            host.activate(counting_source(tmp_path, "4.0.0", fail_from=2)),
            return_exceptions=True,
        )
        await all_running(host)
        after = await asyncio.gather(*(host.call("pooled.where") for _ in range(30)))
        failed, versions, stats = failed[0], {r["version"] for r in after}, plugin_stats(host)
    assert isinstance(failed, MCPHostError) and "load 2 of this version fails" in failed.message
    assert versions == {"1.0.0"}
    assert [r["version"] for r in stats["replicas"]] == ["1.0.0", "1.0.0"]


async def test_a_pool_that_cannot_start_says_why_and_can_be_reset(tmp_path: Path) -> None:
    host = Host(
        tmp_path / "home",
        config=HostConfig(
            allow_unsigned=True,
            isolation="rlimits",
            plugins={"pooled": {"replicas": 2}},  # type: ignore[dict-item]
            max_restarts=0,
        ),
        sources=[counting_source(tmp_path, "5.0.0", fail_from=1)],
        environment=False,
        registry=False,
    )
    async with host:
        first = await asyncio.gather(host.call("pooled.where"), return_exceptions=True)
        state = plugin_stats(host)["state"]
        host.reset_plugin("pooled")
        again = await asyncio.gather(host.call("pooled.where"), return_exceptions=True)
        first, again, state = first[0], again[0], state
    assert isinstance(first, MCPHostError) and "fails" in first.message
    assert isinstance(again, MCPHostError)  # it tried again after the reset, and failed again
    assert state in ("failed", "stopped", "refused", "restarting")


def test_a_pool_logs_name_their_call_and_a_removed_pool_drains_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mcphost.plugin")
    src = pooled_source(tmp_path, "6.0.0")
    code = Path(src.root) / "pooled.py"
    code.write_text(
        code.read_text()
        + textwrap.dedent(
            """
            from mcphost.sdk import Context


            @plugin.tool
            def chatty(ctx: Context) -> str:
                ctx.info("hello from a replica")
                time.sleep(0.05)
                return "done"
            """
        )
    )

    async def scenario() -> tuple[list[Any], list[Any], Any]:
        host = Host(
            tmp_path / "home",
            config=HostConfig(
                allow_unsigned=True,
                isolation="rlimits",
                plugins={"pooled": {"replicas": 2}},  # type: ignore[dict-item]
            ),
            sources=[src],
            environment=False,
            registry=False,
        )
        events: list[Any] = []
        async with host:
            host.add_listener(events.append)
            await host.call("pooled.where")
            await all_running(host)
            running = [asyncio.ensure_future(host.call("pooled.chatty")) for _ in range(4)]
            await asyncio.sleep(0.01)
            await host.deactivate("pooled")  # drains: the calls in flight finish
            done = await asyncio.gather(*running, return_exceptions=True)
            after = await asyncio.gather(host.call("pooled.where"), return_exceptions=True)
            logs = [e for e in events if e.kind == "log"]
            return done, logs, after[0]

    done, logs, after = run(scenario())
    records = [r for r in caplog.records if "hello from a replica" in r.getMessage()]
    assert len(records) == 4 and {getattr(r, "tool", "") for r in records} == {"chatty"}
    assert done == ["done"] * 4
    assert logs and all(e.message == "hello from a replica" for e in logs)
    assert isinstance(after, MCPHostError) and after.code == "plugin_not_found"


def test_a_pool_needs_a_replica() -> None:
    from mcphost.host.pool import WorkerPool

    with pytest.raises(ValueError, match="at least one replica"):
        WorkerPool(None, None, 0)  # type: ignore[arg-type]


async def test_a_pool_shows_its_replicas_in_the_metrics(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from mcphost.host.observe.export import render

    async with pool_host(tmp_path, replicas=3) as host:
        await host.call("pooled.where")
        await all_running(host)
        slow = [asyncio.ensure_future(host.call("pooled.where", {"pause": 0.3})) for _ in range(6)]
        await asyncio.sleep(0.1)
        assert host.metrics is not None
        text = render(host.metrics, host).decode()
        await asyncio.gather(*slow)
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert found[("mcphost_pool_replicas", (("plugin", "pooled"),))] == 3
    inflight = [v for (name, labels), v in found.items() if name == "mcphost_pool_replica_inflight"]
    assert len(inflight) == 3 and sum(inflight) == 6
