"""Fixtures for the cluster suite: one real local Ray cluster per test session, and a
signed plugin installed in a real registry for it to run.

Without Ray installed the suite fails in CI (``CI`` set) and is skipped elsewhere.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.extras import require_ray
from support.wheels import build_wheel

from mcphost.host import Home
from mcphost.registry import Registry
from mcphost.security import Permissions, PrivateKey, TrustStore, generate_key, sign_wheel

PLUGIN = '''
"""remotekit: tools to watch a worker run on a cluster node."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator

from mcphost.sdk import Context, Plugin
from mcphost.sdk.errors import ToolError

plugin = Plugin("remotekit")


@plugin.tool
def where() -> dict:
    """The pid and parent pid of the worker that ran the call."""
    return {"pid": os.getpid(), "ppid": os.getppid(), "version": "VERSION"}


@plugin.tool
def refuse(why: str) -> None:
    """Fails on purpose with code not_found."""
    raise ToolError(f"refused: {why}", code="not_found")


@plugin.tool
async def count_to(n: int, ctx: Context, delay: float = 0.0) -> AsyncIterator[int]:
    """1..n, one item at a time."""
    for i in range(1, n + 1):
        if delay:
            await asyncio.sleep(delay)
        yield i


@plugin.tool
async def wait(seconds: float) -> float:
    """Sleeps, then answers how long."""
    await asyncio.sleep(seconds)
    return seconds


@plugin.tool
def crash() -> None:
    """Says so on stderr, then ends the worker's process at once."""
    print("remotekit is crashing", file=sys.stderr, flush=True)
    os._exit(3)


@plugin.tool
def say(text: str) -> None:
    """Prints ``text`` to stdout and to stderr."""
    print(f"out: {text}", flush=True)
    print(f"err: {text}", file=sys.stderr, flush=True)


_produced = [0]


@plugin.tool
def numbers(n: int, size: int = 0) -> Iterator[dict]:
    """0..n-1, each padded with ``size`` bytes; counts what it produced."""
    pad = "x" * size
    for i in range(n):
        _produced[0] = i + 1
        yield {"i": i, "pad": pad}


@plugin.tool
def produced() -> int:
    """How many items ``numbers`` has produced so far."""
    return _produced[0]


_gate = threading.Event()
_arrived: list[int] = []
_batches = iter(range(1_000_000))


@plugin.tool(batch=True)
def checked(items: list[int]) -> list:
    """Each item doubled, with the size and order of the batch it came in; a negative
    item fails on its own; item 1000 holds its batch until ``release``."""
    if 1000 in items:
        _arrived.append(1000)
        _gate.wait(20)
    n = next(_batches)
    return [
        ToolError(f"{i} is negative", code="negative", data={"order": n, "batch": len(items)})
        if i < 0
        else {"value": 2 * i, "order": n, "batch": len(items)}
        for i in items
    ]


@plugin.tool
def release() -> None:
    """Lets the held batch of ``checked`` go."""
    _gate.set()


@plugin.tool
def arrived() -> list[int]:
    """The held items that reached ``checked``."""
    return list(_arrived)
'''

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "mcphost-remotekit"
version = "VERSION"
requires-python = ">=3.11"
dependencies = []

[project.entry-points."mcphost.plugins"]
remotekit = "mcphost_remotekit:plugin"

[tool.setuptools]
packages = ["mcphost_remotekit"]
"""


#: The labels of the local cluster's node (placement by label selectors).
NODE_LABELS = {"mcphost.dev/zone": "a", "disk": "ssd"}


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real local Ray cluster of 2 CPUs for the module's tests, shut down after them
    (its processes would otherwise stay children of the test run for later tests)."""
    ray = require_ray()
    # Nodes unpack wheels and keep plugin data here (Ray's workers inherit it).
    os.environ["MCPHOST_NODE_DIR"] = str(tmp_path_factory.mktemp("node"))
    ray.init(
        num_cpus=2,
        labels=dict(NODE_LABELS),
        include_dashboard=False,
        configure_logging=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def cluster_key() -> PrivateKey:
    return generate_key()


@pytest.fixture(scope="session")
def remotekit_wheels(
    tmp_path_factory: pytest.TempPathFactory, cluster_key: PrivateKey
) -> dict[str, Path]:
    """Signed remotekit wheels by version ("1.0.0", "1.1.0")."""
    out: dict[str, Path] = {}
    for version in ("1.0.0", "1.1.0"):
        project = tmp_path_factory.mktemp(f"remotekit-{version}")
        (project / "pyproject.toml").write_text(PYPROJECT.replace("VERSION", version))
        pkg = project / "mcphost_remotekit"
        pkg.mkdir()
        code = textwrap.dedent(PLUGIN).replace("VERSION", version)
        (pkg / "__init__.py").write_text(code)
        raw = build_wheel(project, tmp_path_factory.mktemp("raw"))
        out[version] = sign_wheel(
            raw, cluster_key, permissions=Permissions(), out=tmp_path_factory.mktemp("signed")
        )
    return out


@pytest.fixture
def cluster_home(
    tmp_path: Path, cluster_key: PrivateKey, remotekit_wheels: dict[str, Path]
) -> Home:
    """A home that trusts the test key, with remotekit 1.0.0 installed and active."""
    home = Home(tmp_path / "home").ensure()
    TrustStore(home.keys_dir).trust(cluster_key.public_key.pem(), "test publisher")
    with Registry.open(home) as reg:
        reg.install(reg.check(remotekit_wheels["1.0.0"]), activate=True)
    return home
