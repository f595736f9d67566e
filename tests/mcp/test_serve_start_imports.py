"""What `mcphost serve` loads before it answers its first request over stdio.

The stdio start path is the CLI, the MCP server and the version in ``serverInfo``; the
host's own modules (configuration models, verification, the registry, supervision) load
on a thread once serving has begun. These tests pin that: a module that creeps onto the
path shows up here, not as a slower start nobody notices.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mcphost.host.cli.dist_version import installed_version

# Heavy, or only needed once the host runs: none of them before serving starts.
NOT_ON_START_PATH = (
    "pydantic",
    "cryptography",
    "opentelemetry",
    "prometheus_client",
    "importlib.metadata",
    "importlib_metadata",
    "psutil",
    "uvicorn",
    "mcphost.host.host",
    "mcphost.host.config",
    "mcphost.registry",
    "mcphost.security",
)

START_PATH = f"""
import json, sys
import mcphost.host.cli.serve as serve
import mcphost.host.mcp.stdio
from mcphost.host.mcp import McpServer, ServerOptions
serve._version()
print(json.dumps([m for m in {list(NOT_ON_START_PATH)!r} if m in sys.modules]))
"""


def test_serves_stdio_start_path_loads_no_heavy_or_host_only_module() -> None:
    out = subprocess.run(
        [sys.executable, "-c", START_PATH], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


# What installs, swaps, rebuilds and signs: the host reads the registry and verifies
# plugins without them.
NOT_ON_HOST_START = (
    "mcphost.registry.registry",
    "mcphost.registry.rebuild",
    "mcphost.registry.wheels",
    "mcphost.registry.writes",
    "mcphost.security.signing",
    "mcphost.security.tokens",
)

HOST_START = f"""
import json, sys
import mcphost.host.host, mcphost.host.verification, mcphost.host.registry_link
print(json.dumps([m for m in {list(NOT_ON_HOST_START)!r} if m in sys.modules]))
"""


def test_the_hosts_start_modules_load_no_registry_writes_nor_signing() -> None:
    out = subprocess.run(
        [sys.executable, "-c", HOST_START], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


def test_the_version_serve_reports_is_the_installed_distributions() -> None:
    assert installed_version() == importlib.metadata.version("mcphost")


def _dist(root: Path, name: str, metadata: str) -> None:
    d = root / name
    d.mkdir(parents=True)
    (d / "METADATA").write_text(metadata)


def test_the_first_dist_info_on_the_path_gives_the_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _dist(
        tmp_path / "a",
        "mcphost-9.1.dist-info",
        "Metadata-Version: 2.1\nName: mcphost\nVersion: 9.1\n",
    )
    _dist(tmp_path / "b", "mcphost-8.0.dist-info", "Name: mcphost\nVersion: 8.0\n")
    _dist(tmp_path / "a", "mcphost_other-1.0.dist-info", "Name: mcphost-other\nVersion: 1.0\n")
    monkeypatch.setattr(
        sys, "path", [str(tmp_path / "missing"), str(tmp_path / "a"), str(tmp_path / "b")]
    )
    assert installed_version() == "9.1"


def test_a_dist_info_without_a_version_line_falls_back_to_importlib_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _dist(tmp_path, "mcphost-1.0.dist-info", "Name: mcphost\n\nVersion: 7.7\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    # Nothing on this path is installed: the fallback's answer for no distribution.
    assert installed_version() == "0"
