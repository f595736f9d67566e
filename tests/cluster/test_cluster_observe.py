"""Where a plugin's workers run, as an operator sees it, on a real local Ray cluster:
`mcphost doctor` shows the cluster's nodes, their resources and the isolation each can
give; `mcphost status` and the metrics show on which node each replica runs."""

from __future__ import annotations

import json
import socket
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from support.cli import run_mcphost
from support.waiting import wait_until

from mcphost.host import Home, Host, HostConfig
from mcphost.host.cli.status import render
from mcphost.host.observe.export import render as metrics_text
from mcphost.host.observe.status import snapshot


def test_doctor_shows_the_clusters_nodes_resources_and_isolation(
    ray_cluster: Any, cluster_home: Home
) -> None:
    cluster_home.config_file.write_text(
        'isolation = "rlimits"\n[cluster]\nbackend = "ray"\naddress = "auto"\n'
    )
    # A process of its own (doctor probes bubblewrap, which makes its process a child
    # subreaper), joining this cluster: "auto" takes RAY_ADDRESS first.
    joined = {"RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    out = run_mcphost("doctor", home=cluster_home, extra_env=joined, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "cluster     ray at 'auto': 1 live node" in text
    assert f"  node {socket.gethostname()} (" in text
    assert "CPU=2" in text  # the resources Ray gave the node
    assert "disk=ssd" in text and "mcphost.dev/zone=a" in text  # its labels
    assert "backend rlimits (rlimits): available" in text.split("cluster ")[1]
    assert "isolation  rlimits: workers can start here" in text

    out = run_mcphost("doctor", "--json", home=cluster_home, extra_env=joined, timeout=120)
    data = json.loads(out.stdout)["cluster"]
    assert data["address"] == "auto" and data["error"] is None
    [node] = data["nodes"]
    assert node["node_id"] == ray_cluster.get_runtime_context().get_node_id()
    assert node["resources"]["CPU"] == 2
    assert node["name"] == socket.gethostname()
    assert node["isolation"] == "rlimits"
    assert node["labels"]["mcphost.dev/zone"] == "a"  # what label selectors match
    assert {b["backend"] for b in node["backends"]} >= {"rlimits"}


def replicas(host: Host) -> list[dict[str, Any]]:
    return next(s for s in host.stats() if s["plugin"] == "remotekit")["replicas"]  # type: ignore[no-any-return]


async def test_status_and_metrics_show_where_each_replica_runs(
    ray_cluster: Any, cluster_home: Home
) -> None:
    config = HostConfig(
        isolation="rlimits",
        plugins={  # type: ignore[dict-item]
            "remotekit": {"placement": "ray", "num_cpus": 0.5, "replicas": 2, "ray_replicas": 1}
        },
        cluster={"backend": "ray", "address": "auto"},  # type: ignore[arg-type]
    )
    node = socket.gethostname()
    async with Host(cluster_home, config=config, environment=False, status=False) as host:
        await host.call("remotekit.where", {})
        await wait_until(
            lambda: all(r["state"] == "running" for r in replicas(host)), 30, "both running"
        )
        table = render([snapshot(host)])
        assert host.metrics is not None
        metrics = metrics_text(host.metrics, host).decode()

    header, row = table.splitlines()[2:4]
    assert header.split()[-1] == "WHERE"
    assert row.startswith("  remotekit") and row.endswith(f"1 ray@{node}, 1 local")
    assert f"  remotekit replicas: 0 ray@{node}, 1 local" in table

    placed = {
        (s.labels["replica"], s.labels["placement"], s.labels["node"]): s.value
        for fam in text_string_to_metric_families(metrics)
        for s in fam.samples
        if s.name == "mcphost_worker_placement" and s.labels["plugin"] == "remotekit"
    }
    assert placed == {("0", "ray", node): 1.0, ("1", "local", ""): 1.0}
    inflight = {
        (s.labels["replica"], s.labels["placement"], s.labels["node"])
        for fam in text_string_to_metric_families(metrics)
        for s in fam.samples
        if s.name == "mcphost_pool_replica_inflight"
    }
    assert inflight == {("0", "ray", node), ("1", "local", "")}
