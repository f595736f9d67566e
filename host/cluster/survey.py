"""What ``mcphost doctor`` shows of the cluster of ``[cluster]``: its address, its live
nodes with their resources, and on each node the isolation backends it can run and
whether it can give the host's own (a node that cannot refuses every worker start).

The isolation of a node is read on that node, by a task pinned to it that reserves no
CPU (so a full cluster still answers). Ray is imported only when this runs, and this
runs only when ``[cluster]`` is configured; a cluster that cannot be reached is a
report with an ``error``, never an exception.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from mcphost.sdk.errors import ConfigError, MCPHostError

from ..config import ClusterConfig

__all__ = ["node_isolation", "survey"]

#: Seconds the whole survey may take (joining the cluster, then every node's answer).
TIMEOUT = 60.0


def node_isolation(wanted: str) -> dict[str, Any]:
    """On a node: its name, mcphost's version there, the isolation backends it can run,
    and which one it would use for the host's ``isolation`` setting (or why none)."""
    from importlib.metadata import version

    import msgspec

    from mcphost.sandbox.jail import available_backends, choose_backend

    from .node import _node_name

    try:
        chosen: str | None = choose_backend(wanted).name
        refusal = None
    except MCPHostError as exc:
        chosen, refusal = None, exc.message
    return {
        "name": _node_name(),
        "mcphost": version("mcphost"),
        "backends": [msgspec.to_builtins(b.report()) for b in available_backends()],
        "isolation": chosen,
        "refusal": refusal,
    }


def survey(cluster: ClusterConfig, isolation: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The cluster as ``mcphost doctor`` reports it, ``{"address", "nodes", "error"}``:
    one entry per live node (its id, address, resources, and its isolation as
    :func:`node_isolation` reads it there). ``isolation`` is the host's setting.

    With ``address = "local"`` there is no cluster until a host starts one, and none is
    started here: the nodes are this machine, shown above by doctor."""
    out: dict[str, Any] = {"backend": cluster.backend, "address": cluster.address}
    if cluster.address == "local":
        out.update(
            nodes=[],
            error=None,
            note="a cluster of this machine only, started by "
            "the host at the first start of a plugin placed on it (not by doctor)",
        )
        return out
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["nodes"] = _nodes(cluster, isolation, timeout)
        except MCPHostError as exc:
            result["error"] = exc.message
        except Exception as exc:  # Ray's own errors: a failed check, not a traceback
            result["error"] = f"{type(exc).__name__}: {exc}"

    # Ray's own warnings (no signal handler outside the main thread...) stay out of the
    # report: what went wrong is in its error.
    logging.getLogger("ray").addHandler(logging.NullHandler())
    # Joining a cluster that does not answer can block in Ray: give up after `timeout`.
    worker = threading.Thread(target=run, name="mcphost-cluster-survey", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        result = {
            "error": f"the Ray cluster at {cluster.address!r} did not answer in {timeout:g} s"
        }
    out["nodes"] = result.get("nodes", [])
    out["error"] = result.get("error")
    return out


def _nodes(cluster: ClusterConfig, isolation: str, timeout: float) -> list[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "Ray is not installed; install it with `pip install 'mcphost[ray]'`"
        ) from None
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from .ray_host import connect

    joined_here = not ray.is_initialized()
    connect(cluster)
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(node_isolation)
        nodes = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
        refs = [
            probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(isolation)
            for n in nodes
        ]
        found = []
        for n, ref in zip(nodes, refs, strict=True):
            entry: dict[str, Any] = {
                "node_id": n["NodeID"],
                "address": n.get("NodeManagerAddress"),
                "hostname": n.get("NodeManagerHostname"),
                "resources": dict(n.get("Resources") or {}),
                "labels": dict(n.get("Labels") or {}),
            }
            try:
                reply: dict[str, Any] = ray.get(ref, timeout=timeout)
                entry.update(reply, error=None)
            except Exception as exc:
                entry["error"] = f"the node did not report its isolation: {exc}"
            found.append(entry)
        return found
    finally:
        if joined_here:
            ray.shutdown()
