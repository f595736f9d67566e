"""A plugin whose wheel has dependencies, run with placement = "ray" on a real local Ray
cluster: the node is sent the dependencies the registry installed (once per node),
checks them against the hashes the registry recorded at install, and the worker
imports them from the node's copy; a dependency changed in the node's cache is refused
there, naming the file and the node."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import socket
import stat
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bwrap_check import require_bwrap
from support.extras import require_ray
from support.wheels import build_wheel

from mcphost.host import Home, Host, HostConfig
from mcphost.host.cluster.node import (
    DependenciesWanted,
    StartRequest,
    deps_digest,
    node_dir,
    prepare_deps,
)
from mcphost.registry import Registry
from mcphost.sandbox.isolation import Grants, Limits
from mcphost.sdk.errors import MCPHostError, VerificationError
from mcphost.security import Permissions, PrivateKey, TrustStore, sign_wheel

PLUGIN = '''
"""depkit: a tool that answers with a value from its dependency."""

from mcphost.sdk import Plugin

plugin = Plugin("depkit")


@plugin.tool
def answer() -> dict:
    """The dependency's answer, and the file it was imported from."""
    import remotedep

    return {"answer": remotedep.ANSWER, "file": remotedep.__file__}
'''

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "mcphost-depkit"
version = "1.0.0"
requires-python = ">=3.11"
dependencies = ["remotedep>=0.1"]

[project.entry-points."mcphost.plugins"]
depkit = "mcphost_depkit:plugin"

[tool.setuptools]
packages = ["mcphost_depkit"]
"""

DEPENDENCY = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "remotedep"
version = "0.1"

[tool.setuptools]
packages = ["remotedep"]
"""


@pytest.fixture(scope="module")
def depkit(tmp_path_factory: pytest.TempPathFactory, cluster_key: PrivateKey) -> tuple[Path, Path]:
    """The signed depkit wheel, and a find-links folder with the wheel of its dependency
    (so installing it needs no network)."""
    dep = tmp_path_factory.mktemp("remotedep")
    (dep / "remotedep").mkdir()
    (dep / "remotedep" / "__init__.py").write_text("ANSWER = 42\n")
    (dep / "pyproject.toml").write_text(DEPENDENCY)
    links = tmp_path_factory.mktemp("links")
    build_wheel(dep, links)
    project = tmp_path_factory.mktemp("depkit")
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "mcphost_depkit").mkdir()
    (project / "mcphost_depkit" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    raw = build_wheel(project, tmp_path_factory.mktemp("raw"))
    wheel = sign_wheel(
        raw, cluster_key, permissions=Permissions(), out=tmp_path_factory.mktemp("signed")
    )
    return wheel, links


@pytest.fixture
def deps_home(tmp_path: Path, cluster_key: PrivateKey, depkit: tuple[Path, Path]) -> Home:
    """A home that trusts the test key, with depkit installed (its dependency from the
    find-links folder) and active."""
    wheel, links = depkit
    home = Home(tmp_path / "home").ensure()
    TrustStore(home.keys_dir).trust(cluster_key.public_key.pem(), "test publisher")
    with Registry.open(home) as reg:
        reg.install(reg.check(wheel), activate=True, find_links=[links])
    return home


def ray_host(home: Home, isolation: str = "rlimits") -> Host:
    config = HostConfig(
        isolation=isolation,  # type: ignore[arg-type]
        plugins={"depkit": {"placement": "ray", "num_cpus": 0.5}},  # type: ignore[dict-item]
        cluster={"backend": "ray", "address": "auto"},  # type: ignore[arg-type]
        backoff_initial=0.0,
    )
    return Host(home, config=config, environment=False, status=False, metrics=False)


def recorded(home: Home) -> dict[str, str]:
    with Registry.open(home) as reg:
        files = reg.version("depkit", "1.0.0").deps_files
    assert files, "the registry recorded the dependency's files"
    return files


def node_copy(home: Home) -> Path:
    """Where the node keeps the version's dependencies (under their digest)."""
    return node_dir() / "deps" / deps_digest(recorded(home))


def forget_on_node(home: Home) -> None:
    """Remove the node's copy, as on a node that never had it."""
    where = node_copy(home)
    if where.exists():
        for d, _, _ in os.walk(where):
            os.chmod(d, 0o755)
        shutil.rmtree(where)


@pytest.fixture
def sends(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """The host's log lines that say it sent dependencies to a node."""
    caplog.set_level(logging.INFO, logger="mcphost.cluster")
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if text.startswith("sending the dependencies"):
                lines.append(text)

    handler = Collect()
    logging.getLogger("mcphost.cluster").addHandler(handler)
    try:
        yield lines
    finally:
        logging.getLogger("mcphost.cluster").removeHandler(handler)


async def test_a_plugin_with_a_dependency_answers_from_the_nodes_copy_sent_once(
    ray_cluster: Any, deps_home: Home, sends: list[str]
) -> None:
    forget_on_node(deps_home)
    async with ray_host(deps_home) as host:
        out = await host.call("depkit.answer", {})
    assert out["answer"] == 42
    # Imported from the node's copy under the digest of the registry's record, not from
    # the host's deps/ folder.
    assert Path(out["file"]) == node_copy(deps_home) / "deps" / "remotedep" / "__init__.py"
    assert len(sends) == 1, sends
    assert f"to node {socket.gethostname()}" in sends[0]
    # The node keeps them: a new worker there (another host) starts without them.
    async with ray_host(deps_home) as host:
        assert (await host.call("depkit.answer", {}))["answer"] == 42
    assert len(sends) == 1, sends


async def test_a_dependency_changed_or_added_in_the_nodes_cache_is_refused_there(
    ray_cluster: Any, deps_home: Home
) -> None:
    async with ray_host(deps_home) as host:
        assert (await host.call("depkit.answer", {}))["answer"] == 42
    code = node_copy(deps_home) / "deps" / "remotedep" / "__init__.py"
    extra = code.parent / "extra.py"
    original = code.read_bytes()
    code.parent.chmod(0o755)
    code.chmod(0o644)
    try:
        code.write_bytes(b"ANSWER = 666\n")
        async with ray_host(deps_home) as host:
            with pytest.raises(MCPHostError) as info:
                await host.call("depkit.answer", {})
        assert info.value.code == "verification_failed"
        message = info.value.message
        assert f"refused on node {socket.gethostname()}" in message
        assert "remotedep/__init__.py was changed" in message
        assert info.value.data["reason"] == "dependency_changed"
        code.write_bytes(original)
        extra.write_text("print('not installed by the registry')\n")
        async with ray_host(deps_home) as host:
            with pytest.raises(MCPHostError) as info:
                await host.call("depkit.answer", {})
        assert info.value.code == "verification_failed"
        assert "remotedep/extra.py was added" in info.value.message
        assert f"refused on node {socket.gethostname()}" in info.value.message
    finally:
        code.write_bytes(original)
        extra.unlink(missing_ok=True)
    # Put back as unpacked, it serves again.
    async with ray_host(deps_home) as host:
        assert (await host.call("depkit.answer", {}))["answer"] == 42


async def test_dependencies_changed_on_the_host_are_refused_before_anything_is_sent(
    ray_cluster: Any, deps_home: Home, sends: list[str]
) -> None:
    forget_on_node(deps_home)
    with Registry.open(deps_home) as reg:
        deps = Path(reg.version("depkit", "1.0.0").deps_dir)
    code = deps / "remotedep" / "__init__.py"
    code.chmod(0o644)
    code.write_text("ANSWER = 666\n")
    async with ray_host(deps_home) as host:
        with pytest.raises(MCPHostError) as info:
            await host.call("depkit.answer", {})
    assert info.value.code == "verification_failed"
    assert "dependencies changed" in info.value.message
    assert "remotedep/__init__.py" in info.value.message
    assert sends == []
    assert not node_copy(deps_home).exists()


def test_the_archive_of_the_dependencies_is_the_registrys_record_and_only_that(
    deps_home: Home,
) -> None:
    require_ray()
    from mcphost.host.cluster.ray_host import deps_archive

    files = recorded(deps_home)
    with Registry.open(deps_home) as reg:
        deps = Path(reg.version("depkit", "1.0.0").deps_dir)
    first = deps_archive(deps, files, "depkit 1.0.0")
    # The same record gives the same bytes (one content address per record).
    assert deps_archive(deps, files, "depkit 1.0.0") == first
    # A file of deps/ the record does not list does not travel.
    os.chmod(deps, 0o755)
    (deps / "stray.txt").write_text("not recorded\n")
    assert deps_archive(deps, files, "depkit 1.0.0") == first
    # A recorded file whose content changed is refused, named.
    code = deps / "remotedep" / "__init__.py"
    code.chmod(stat.S_IRUSR | stat.S_IWUSR)
    code.write_text("ANSWER = 666\n")
    with pytest.raises(VerificationError, match=r"dependency remotedep/__init__\.py is not"):
        deps_archive(deps, files, "depkit 1.0.0")


@pytest.mark.bwrap
async def test_a_jailed_worker_on_the_node_sees_its_dependencies_read_only_as_locally(
    ray_cluster: Any, deps_home: Home
) -> None:
    require_bwrap()
    async with ray_host(deps_home, isolation="bwrap") as host:
        out = await host.call("depkit.answer", {})
    assert out["answer"] == 42
    # As a local jail binds them: the code at /app/0, the dependencies at /app/1.
    assert out["file"] == "/app/1/remotedep/__init__.py"


def _tar(entries: list[tuple[str, bytes | str]]) -> bytes:
    """A tar of files (bytes) and symlinks (str: the target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_a_node_unpacks_only_the_recorded_files_of_an_archive(tmp_path: Path) -> None:
    good = b"ANSWER = 42\n"
    files = {"remotedep/__init__.py": hashlib.sha256(good).hexdigest()}
    req = StartRequest(
        plugin="depkit",
        version="1.0.0",
        entry="mcphost_depkit:plugin",
        wheel_sha256="0" * 64,
        trust={},
        allow_unsigned=False,
        isolation="rlimits",
        level="rlimits",
        limits=Limits(),
        grants=Grants(),
        max_frame=1 << 20,
        threads=1,
        token=b"t" * 32,
        deps_files=files,
    )
    bad: dict[str, list[tuple[str, bytes | str]]] = {
        "a file the record does not list": [
            ("remotedep/__init__.py", good),
            ("remotedep/evil.py", b"x"),
        ],
        "a file with other content": [("remotedep/__init__.py", b"ANSWER = 666\n")],
        "a path out of the folder": [("../escape.py", good)],
        "a symlink for a file": [("remotedep/__init__.py", "/etc/passwd")],
        "a recorded file missing": [],
    }
    for what, entries in bad.items():
        with pytest.raises(VerificationError, match="refused on node") as info:
            prepare_deps(tmp_path / what, req, _tar(entries))
        assert info.value.data["reason"] == "dependency_changed", what
        assert not (tmp_path / what / "deps" / deps_digest(files)).exists(), what
        assert not (tmp_path / "escape.py").exists()
    with pytest.raises(DependenciesWanted):
        prepare_deps(tmp_path / "node", req, None)
    deps = prepare_deps(tmp_path / "node", req, _tar([("remotedep/__init__.py", good)]))
    assert deps is not None and (deps / "remotedep" / "__init__.py").read_bytes() == good
    # Kept under the digest: the next start needs no archive.
    assert prepare_deps(tmp_path / "node", req, None) == deps
