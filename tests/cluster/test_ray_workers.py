"""Plugin workers hosted by Ray actors (placement = "ray"), on a real local Ray cluster:
calls, tool errors and streams answer as they do locally; a remote worker that crashes,
or whose actor dies, is restarted and the calls in flight fail naming the node; a
tampered wheel is refused on the node; a pool mixes local and remote replicas; what a
remote worker prints reaches the host's log."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import zipfile
from pathlib import Path
from typing import Any

import psutil
import pytest
from bwrap_check import require_bwrap
from support.waiting import wait_until

from mcphost.host import Home, Host, HostConfig, HostEvent
from mcphost.host.cluster.node import node_dir
from mcphost.registry import Registry
from mcphost.sandbox.reaper import set_subreaper
from mcphost.sdk.errors import MCPHostError


def ray_config(isolation: str = "rlimits", **plugin: Any) -> HostConfig:
    settings: dict[str, Any] = {"placement": "ray", "num_cpus": 0.5, **plugin}
    return HostConfig(
        isolation=isolation,  # type: ignore[arg-type]
        plugins={"remotekit": settings},  # type: ignore[dict-item]
        cluster={"backend": "ray", "address": "auto"},  # type: ignore[arg-type]
        backoff_initial=0.0,
    )


def ray_host(home: Home, config: HostConfig) -> Host:
    return Host(home, config=config, environment=False, status=False, metrics=False)


def remotekit_stats(host: Host) -> dict[str, Any]:
    return next(s for s in host.stats() if s["plugin"] == "remotekit")


def ended(pid: int) -> bool:
    """Whether process ``pid`` no longer runs: gone, or dead and waiting for its
    parent (after its actor died that is whichever process adopted it) to reap it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def hosted_by_ray_actor(ppid: int) -> bool:
    """Whether ``ppid`` is the process of a Ray actor that supervises a worker."""
    return ppid != os.getpid() and "NodeWorker" in " ".join(psutil.Process(ppid).cmdline())


async def test_a_call_runs_in_a_worker_started_by_a_ray_actor(
    ray_cluster: Any, cluster_home: Home
) -> None:
    async with ray_host(cluster_home, ray_config()) as host:
        out = await host.call("remotekit.where", {})
        assert out["version"] == "1.0.0"
        assert hosted_by_ray_actor(out["ppid"])
        stats = remotekit_stats(host)
        assert stats["state"] == "running"
        assert stats["placement"] == "ray"
        assert stats["node"] == socket.gethostname()


async def test_a_tool_error_and_a_stream_cross_the_node_unchanged(
    ray_cluster: Any, cluster_home: Home
) -> None:
    async with ray_host(cluster_home, ray_config()) as host:
        with pytest.raises(MCPHostError) as info:
            await host.call("remotekit.refuse", {"why": "no such city"})
        assert info.value.code == "not_found"
        assert "refused: no such city" in info.value.message
        items = [i async for i in host.stream("remotekit.count_to", {"n": 200}, window=4)]
        assert items == list(range(1, 201))
        # A stream left early is cancelled in the worker, which goes on serving.
        async for item in host.stream("remotekit.count_to", {"n": 10_000, "delay": 0.001}):
            if item == 3:
                break
        assert (await host.call("remotekit.where", {}))["version"] == "1.0.0"


async def test_a_crashed_remote_worker_fails_its_call_naming_the_node_and_is_restarted(
    ray_cluster: Any, cluster_home: Home
) -> None:
    async with ray_host(cluster_home, ray_config()) as host:
        first = await host.call("remotekit.where", {})
        with pytest.raises(MCPHostError) as info:
            await host.call("remotekit.crash", {})
        assert info.value.code == "worker_crashed"
        assert f"on node {socket.gethostname()}" in info.value.message
        assert "exited with status 3" in info.value.message
        again = await host.call("remotekit.where", {})
        assert again["pid"] != first["pid"]
        assert hosted_by_ray_actor(again["ppid"])
        assert remotekit_stats(host)["restarts"] == 1
        # The first worker and its actor are gone: nothing is left behind.
        await wait_until(lambda: ended(first["ppid"]), 15, "the first actor to end")
        assert ended(first["pid"])


async def test_what_a_remote_worker_prints_reaches_the_hosts_log_as_a_local_workers_does(
    ray_cluster: Any, cluster_home: Home
) -> None:
    async with ray_host(cluster_home, ray_config()) as host:
        logged: list[tuple[str, str, str]] = []

        def listen(event: HostEvent) -> None:
            if event.kind == "log":
                logged.append((event.plugin, event.level, event.message))

        host.add_listener(listen)
        await host.call("remotekit.say", {"text": "hello from the node"})

        def said() -> list[tuple[str, str, str]]:
            return sorted(line for line in logged if "hello" in line[2])

        await wait_until(lambda: len(said()) >= 2, 10, "both lines in the host's log")
        # stdout at info, stderr at warning, as for a local worker; each line once.
        assert said() == [
            ("remotekit", "info", "out: hello from the node"),
            ("remotekit", "warning", "err: hello from the node"),
        ]
        # The last words of a worker that crashes arrive too.
        with pytest.raises(MCPHostError):
            await host.call("remotekit.crash", {})
        await wait_until(
            lambda: ("remotekit", "warning", "remotekit is crashing") in logged,
            10,
            "the crashing worker's last line",
        )


async def test_a_dead_actor_fails_the_calls_in_flight_kills_its_worker_and_is_replaced(
    ray_cluster: Any, cluster_home: Home
) -> None:
    # As with any jail started by this process: orphans of its tree come to it.
    set_subreaper()
    async with ray_host(cluster_home, ray_config()) as host:
        first = await host.call("remotekit.where", {})
        calls = [
            asyncio.ensure_future(host.call("remotekit.wait", {"seconds": 60})) for _ in range(3)
        ]
        await wait_until(lambda: remotekit_stats(host).get("inflight") == 3, 10, "3 calls running")
        os.kill(first["ppid"], signal.SIGKILL)  # the actor's process dies, as with its node
        results = await asyncio.gather(*calls, return_exceptions=True)
        for r in results:
            assert isinstance(r, MCPHostError) and r.code == "worker_crashed", r
            assert f"on node {socket.gethostname()}" in r.message
        # The worker died with its actor, and the host that adopted it reaped it: no
        # orphan, and no zombie left for as long as the host runs.
        await wait_until(lambda: not psutil.pid_exists(first["pid"]), 15, "the worker reaped")
        again = await host.call("remotekit.where", {})
        assert again["pid"] != first["pid"] and hosted_by_ray_actor(again["ppid"])


async def test_a_tampered_wheel_is_refused_on_the_node(
    ray_cluster: Any, cluster_home: Home, tmp_path: Path
) -> None:
    with Registry.open(cluster_home) as reg:
        sha = reg.version("remotekit", "1.0.0").wheel_sha256
    stored = cluster_home.store_dir / f"{sha}.whl"
    # The host's installed tree is intact (its own check passes); the wheel it would send
    # to the node has a changed tool.
    tampered = tmp_path / "tampered.whl"
    with zipfile.ZipFile(stored) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "mcphost_remotekit/__init__.py":
                data = data.replace(b'"version": "1.0.0"', b'"version": "evil"')
            dst.writestr(item, data)
    stored.chmod(0o644)
    stored.write_bytes(tampered.read_bytes())
    async with ray_host(cluster_home, ray_config()) as host:
        with pytest.raises(MCPHostError) as info:
            await host.call("remotekit.where", {})
        assert info.value.code == "verification_failed"
        assert f"refused on node {socket.gethostname()}" in info.value.message
        assert remotekit_stats(host)["state"] == "refused"


async def test_a_plugin_tree_changed_on_the_node_is_refused_there(
    ray_cluster: Any, cluster_home: Home
) -> None:
    async with ray_host(cluster_home, ray_config()) as host:
        assert (await host.call("remotekit.where", {}))["version"] == "1.0.0"
    with Registry.open(cluster_home) as reg:
        sha = reg.version("remotekit", "1.0.0").wheel_sha256
    # The node keeps the unpacked wheel under its digest; someone on the node edits it.
    code = node_dir() / "trees" / sha / "plugin" / "mcphost_remotekit" / "__init__.py"
    original = code.read_bytes()
    code.parent.chmod(0o755)
    code.chmod(0o644)
    try:
        code.write_bytes(original.replace(b'"version": "1.0.0"', b'"version": "evil"'))
        async with ray_host(cluster_home, ray_config()) as host:
            with pytest.raises(MCPHostError) as info:
                await host.call("remotekit.where", {})
            assert info.value.code == "verification_failed"
            assert f"refused on node {socket.gethostname()}" in info.value.message
            assert "mcphost_remotekit/__init__.py" in info.value.message
    finally:
        code.write_bytes(original)


async def test_a_pool_mixes_a_local_and_a_remote_replica(
    ray_cluster: Any, cluster_home: Home
) -> None:
    config = ray_config(replicas=2, ray_replicas=1)
    async with ray_host(cluster_home, config) as host:
        await host.call("remotekit.where", {})
        await wait_until(
            lambda: all(r["state"] == "running" for r in remotekit_stats(host)["replicas"]),
            30,
            "both replicas running",
        )
        parents: set[int] = set()
        for _ in range(50):
            outs = await asyncio.gather(*(host.call("remotekit.where", {}) for _ in range(8)))
            parents |= {o["ppid"] for o in outs}
            if len(parents) == 2:
                break
        local = {p for p in parents if p == os.getpid()}
        remote = {p for p in parents if hosted_by_ray_actor(p)}
        assert len(local) == 1 and len(remote) == 1, parents
        placements = sorted(r.get("placement", "local") for r in remotekit_stats(host)["replicas"])
        assert placements == ["local", "ray"]


@pytest.mark.bwrap
async def test_a_remote_worker_runs_in_the_same_bubblewrap_jail_as_a_local_one(
    ray_cluster: Any, cluster_home: Home
) -> None:
    require_bwrap()
    async with ray_host(cluster_home, ray_config(isolation="bwrap")) as host:
        out = await host.call("remotekit.where", {})
        assert out["version"] == "1.0.0"
        # In its own pid namespace, in a bubblewrap jail the actor started.
        assert out["pid"] < 10
        jailed = [
            p
            for p in psutil.process_iter(["cmdline"])
            if "bwrap" in " ".join(p.info["cmdline"] or [])
            and "remotekit" in " ".join(p.info["cmdline"] or [])
        ]
        assert any(hosted_by_ray_actor(p.ppid()) for p in jailed), jailed


async def test_a_hot_swap_of_a_ray_hosted_plugin_under_load_fails_no_call(
    ray_cluster: Any, cluster_home: Home, remotekit_wheels: dict[str, Path]
) -> None:
    async with ray_host(cluster_home, ray_config()) as host:
        assert (await host.call("remotekit.where", {}))["version"] == "1.0.0"
        seen: list[dict[str, Any]] = []
        failures: list[BaseException] = []
        stop = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                try:
                    seen.append(await host.call("remotekit.where", {}))
                except MCPHostError as exc:
                    failures.append(exc)

        callers = [asyncio.ensure_future(load()) for _ in range(4)]

        def install() -> None:
            with Registry.open(cluster_home) as reg:
                reg.install(reg.check(remotekit_wheels["1.1.0"]), activate=True)

        await asyncio.to_thread(install)
        await wait_until(
            lambda: any(s["version"] == "1.1.0" for s in seen[-4:]), 30, "calls reach 1.1.0"
        )
        stop.set()
        await asyncio.gather(*callers)
        assert failures == []
        assert all(hosted_by_ray_actor(s["ppid"]) for s in seen if s["version"] == "1.1.0")
        assert remotekit_stats(host)["version"] == "1.1.0"


async def test_label_selectors_pick_the_node_and_one_no_node_satisfies_is_refused(
    ray_cluster: Any, cluster_home: Home
) -> None:
    # The local cluster's node has NODE_LABELS (conftest): zone a, disk ssd.
    fits = ray_config(labels={"mcphost.dev/zone": "in(a,b)", "disk": "!hdd"})
    async with ray_host(cluster_home, fits) as host:
        out = await host.call("remotekit.where", {})
        assert hosted_by_ray_actor(out["ppid"])
    nowhere = ray_config(labels={"mcphost.dev/zone": "b"})
    async with ray_host(cluster_home, nowhere) as host:
        with pytest.raises(MCPHostError) as info:
            await host.call("remotekit.where", {})
    assert info.value.code == "config_error"
    assert "no live node of the Ray cluster has the labels plugin remotekit" in str(info.value)
    assert "mcphost.dev/zone = 'b'" in str(info.value)
