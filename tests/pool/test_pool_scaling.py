"""Pools that scale, with real workers: a pool grows while calls hold its replicas and
shrinks when they are idle, never below its minimum; the count shows in the stats,
``mcphost status`` and the metrics; and the settings apply live."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from support.sources import directory_source
from support.waiting import wait_until

from mcphost.host import Host, HostConfig, PluginSource
from mcphost.sdk.errors import MCPHostError

SOURCE = '''
import os, time
VERSION = "{version}"
from pathlib import Path
from mcphost.sdk import Plugin

plugin = Plugin("scaled")


@plugin.tool
def hold(gate: str) -> int:
    """Waits until the file ``gate`` exists, then answers its pid."""
    while not Path(gate).exists():
        time.sleep(0.005)
    return os.getpid()


@plugin.tool(batch=True)
def held(items: list[int], gate: str) -> list[int]:
    """Waits until the file ``gate`` exists, then answers the items."""
    while not Path(gate).exists():
        time.sleep(0.005)
    return items


@plugin.tool
def pid() -> int:
    """The pid of the worker that ran the call."""
    return os.getpid()


@plugin.tool
def version() -> str:
    return VERSION
'''


def scaled_source(tmp_path: Path, version: str = "1.0.0") -> PluginSource:
    code = SOURCE.replace("{version}", version)
    return directory_source(tmp_path / f"scaled-{version}", "scaled", code, version=version)


def config(batching: dict[str, Any] | None = None, **plugin: Any) -> HostConfig:
    return HostConfig(
        allow_unsigned=True,
        isolation="rlimits",
        plugins={"scaled": plugin} if plugin else {},  # type: ignore[dict-item]
        batching=batching or {},  # type: ignore[arg-type]
    )


def scaled_host(tmp_path: Path, cfg: HostConfig) -> Host:
    return Host(
        tmp_path / "home",
        config=cfg,
        sources=[scaled_source(tmp_path)],
        environment=False,
        registry=False,
    )


def stats(host: Host) -> dict[str, Any]:
    return next(s for s in host.stats() if s["plugin"] == "scaled")


def running(host: Host) -> int:
    """Replicas whose worker runs."""
    each = stats(host).get("replicas") or [stats(host)]
    return sum(1 for r in each if r["state"] == "running" and r["pid"])


def count(host: Host) -> int:
    return len(stats(host).get("replicas") or [None])


async def test_a_pool_grows_under_load_and_shrinks_when_idle(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from mcphost.host.cli.status import render
    from mcphost.host.observe.export import render as metrics_text
    from mcphost.host.observe.status import snapshot

    gate = tmp_path / "gate"
    cfg = config(min_replicas=1, max_replicas=3, target_load=1.0, scale_down_after=0.3)
    async with scaled_host(tmp_path, cfg) as host:
        await host.call("scaled.pid")
        assert count(host) == 1
        held = [
            asyncio.ensure_future(host.call("scaled.hold", {"gate": str(gate)})) for _ in range(6)
        ]
        # 6 calls held at 1 a replica: the pool grows to its maximum, and stops there.
        await wait_until(lambda: running(host) == 3, 30, "three replicas running")
        grown = stats(host)
        table = render([snapshot(host)])
        assert host.metrics is not None
        metrics = metrics_text(host.metrics, host).decode()
        # The new replicas take calls while the first ones are held.
        pids = set(await asyncio.gather(*(host.call("scaled.pid") for _ in range(30))))
        gate.touch()
        held_pids = set(await asyncio.gather(*held))
        # Idle: one replica fewer every scale_down_after, down to min_replicas.
        await wait_until(lambda: count(host) == 1, 30, "back to one replica")
        await asyncio.sleep(0.5)
        idle = stats(host)
        after = await host.call("scaled.pid")
    assert count_of(grown) == 3 and grown["scaling"]["scaled_up"] >= 1
    assert grown["scaling"]["last"]["to"] == 3
    assert "calls in flight or queued" in grown["scaling"]["last"]["reason"]
    assert len(pids) == 3  # every replica served
    assert held_pids <= pids | {after}
    assert count_of(idle) == 1 and idle["scaling"]["scaled_down"] == 2
    assert idle["replicas"][0]["pid"] == after  # the first replica stays
    row = next(line for line in table.splitlines() if line.strip().startswith("scaled "))
    assert " 3 (1-3) " in row, row  # REPLICAS: three now, between one and three
    assert "scaled scales 1-3 replicas: up 1" in table
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(metrics)
        for s in fam.samples
    }
    assert found[("mcphost_pool_replicas", (("plugin", "scaled"),))] == 3
    assert found[("mcphost_pool_replica_bounds", (("bound", "max"), ("plugin", "scaled")))] == 3
    assert found[("mcphost_pool_scaled_total", (("direction", "up"), ("plugin", "scaled")))] >= 1


def count_of(s: dict[str, Any]) -> int:
    return len(s.get("replicas") or [None])


async def test_the_replica_settings_apply_live(tmp_path: Path) -> None:
    async with scaled_host(tmp_path, config()) as host:
        first = await host.call("scaled.pid")
        single = stats(host)
        # A single worker that is asked for two becomes the first replica of a pool.
        host.reconfigure(config(replicas=2))
        await wait_until(lambda: running(host) == 2, 30, "two replicas running")
        pids = set(await asyncio.gather(*(host.call("scaled.pid") for _ in range(40))))
        # Fewer: the pool shrinks at its next look, keeping its first replica.
        host.reconfigure(config(max_replicas=1))
        await wait_until(lambda: count(host) == 1, 30, "one replica")
        one = await host.call("scaled.pid")
        # The table gone: the defaults (one worker) apply, and the count stays at one.
        host.reconfigure(config())
        await asyncio.sleep(0.3)
        pending, last = host.restart_pending, stats(host)
    assert "replicas" not in single
    assert first in pids and len(pids) == 2
    assert one == first
    assert pending == [] and count_of(last) == 1


async def test_a_contradictory_change_is_refused_and_the_pool_keeps_running(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        'allow_unsigned = true\nisolation = "rlimits"\n[plugins.scaled]\nreplicas = 2\n'
    )
    host = Host(home, sources=[scaled_source(tmp_path)], environment=False, registry=False)
    async with host:
        await host.call("scaled.pid")
        await wait_until(lambda: running(host) == 2, 30, "two replicas running")
        (home / "config.toml").write_text(
            'allow_unsigned = true\nisolation = "rlimits"\n'
            "[plugins.scaled]\nreplicas = 2\nmax_replicas = 4\n"
        )
        await wait_until(lambda: host.config_error is not None, 30, "the change refused")
        error = host.config_error
        (home / "config.toml").write_text(
            'allow_unsigned = true\nisolation = "rlimits"\n[plugins.scaled]\nreplicas = 3\n'
        )
        await wait_until(lambda: running(host) == 3, 30, "three replicas from the file")
        pids = set(await asyncio.gather(*(host.call("scaled.pid") for _ in range(60))))
    assert error is not None and "contradict each other" in error
    assert len(pids) == 3


async def test_a_pool_that_scales_stops_cleanly_while_a_replica_drains(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    cfg = config(min_replicas=1, max_replicas=2, target_load=1.0, scale_down_after=0.0)
    host = scaled_host(tmp_path, cfg)
    async with host:
        await host.call("scaled.pid")
        held = [
            asyncio.ensure_future(host.call("scaled.hold", {"gate": str(gate)})) for _ in range(2)
        ]
        await wait_until(lambda: running(host) == 2, 30, "two replicas running")
        gate.touch()
        await asyncio.gather(*held)
    outcome = await asyncio.gather(host.call("scaled.pid"), return_exceptions=True)
    assert isinstance(outcome[0], MCPHostError)  # closed: no worker is left behind


async def test_calls_queued_for_a_batch_tool_count_as_load(tmp_path: Path) -> None:
    # One batch of one call at a time: a single call is in flight on a worker, the
    # others wait in the batcher's queue, and that queue is what grows the pool.
    gate = tmp_path / "gate"
    cfg = config(
        batching={"max_batch_size": 1, "max_in_flight": 1},
        min_replicas=1,
        max_replicas=3,
        target_load=2.0,
        scale_down_after=60.0,
    )
    async with scaled_host(tmp_path, cfg) as host:
        await host.call("scaled.pid")
        held = [
            asyncio.ensure_future(host.call("scaled.held", {"items": [i], "gate": str(gate)}))
            for i in range(6)
        ]
        await wait_until(
            lambda: host.batching().get("scaled.held", {}).get("queued") == 5, 30, "5 queued"
        )
        inflight = stats(host)["inflight"]
        await wait_until(lambda: count(host) == 3, 30, "three replicas")
        reason = stats(host)["scaling"]["last"]["reason"]
        gate.touch()
        answers = await asyncio.gather(*held)
    assert inflight == 1
    assert reason.startswith("6 calls in flight or queued over 1 replicas")
    assert answers == [[i] for i in range(6)]


async def test_a_swap_replaces_every_replica_a_pool_grew_to(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    cfg = config(min_replicas=1, max_replicas=3, target_load=1.0, scale_down_after=60.0)
    async with scaled_host(tmp_path, cfg) as host:
        await host.call("scaled.pid")
        held = [
            asyncio.ensure_future(host.call("scaled.hold", {"gate": str(gate)})) for _ in range(3)
        ]
        await wait_until(lambda: running(host) == 3, 30, "three replicas running")
        gate.touch()
        await asyncio.gather(*held)
        await host.activate(scaled_source(tmp_path, "2.0.0"))
        versions = set(await asyncio.gather(*(host.call("scaled.version") for _ in range(30))))
        after = stats(host)
    assert versions == {"2.0.0"}
    assert [r["version"] for r in after["replicas"]] == ["2.0.0"] * 3
