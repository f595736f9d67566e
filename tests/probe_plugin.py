"""probekit: a plugin whose tools show what a worker may do (CPU, files, threads), built
into a real wheel with pip (sign it with ``support.wheels.signed``, install it with the
real ``mcphost plugin install``)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from support.wheels import build_wheel

from mcphost.host import Home
from mcphost.security import PrivateKey, TrustStore

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "mcphost-probekit"
version = "{version}"
requires-python = ">=3.11"
dependencies = []

[project.entry-points."mcphost.plugins"]
probekit = "mcphost_probekit:plugin"

[tool.setuptools]
packages = ["mcphost_probekit"]
"""

CODE = '''\
"""probekit: tools that probe the worker's limits."""

from __future__ import annotations

import os
import threading

from mcphost.sdk import Plugin, ToolError

__version__ = "{version}"

plugin = Plugin("probekit", description="Probes of a worker's limits")
_barriers: dict[int, threading.Barrier] = {{}}
_lock = threading.Lock()


@plugin.tool
def version() -> str:
    """The version of this plugin that answered."""
    return __version__


@plugin.tool
def spin() -> int:
    """Use CPU until the worker is stopped."""
    n = 0
    while True:
        n += 1


@plugin.tool
def open_files(n: int) -> int:
    """Open /dev/null up to ``n`` times; return how many opened before the limit."""
    fds = []
    try:
        for _ in range(n):
            fds.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    finally:
        for fd in fds:
            os.close(fd)
    return len(fds)


@plugin.tool
def crash() -> None:
    """End the worker process at once."""
    os._exit(3)


@plugin.tool
def meet(parties: int, bound: float) -> str:
    """Wait, up to ``bound`` seconds, until ``parties`` calls of this tool run at once."""
    with _lock:
        barrier = _barriers.setdefault(parties, threading.Barrier(parties))
    try:
        barrier.wait(timeout=bound)
    except threading.BrokenBarrierError:
        raise ToolError(f"fewer than {{parties}} calls ran at once", code="alone") from None
    return "met"
'''


def write_probekit(dest: Path, version: str = "1.0.0") -> Path:
    """The probekit project at ``version`` in ``dest``."""
    pkg = dest / "mcphost_probekit"
    pkg.mkdir(parents=True)
    (dest / "pyproject.toml").write_text(PYPROJECT.format(version=version))
    (pkg / "__init__.py").write_text(textwrap.dedent(CODE.format(version=version)))
    return dest


def build_probekit(root: Path, version: str = "1.0.0") -> Path:
    """A real, unsigned wheel of probekit at ``version``, built by pip under ``root``."""
    project = write_probekit(root / f"src-{version}", version)
    out = root / f"wheel-{version}"
    return build_wheel(project, out)


def trusting_home(root: Path, key: PrivateKey, config: str = "") -> Home:
    """A fresh home that trusts ``key``, with ``config`` as its config.toml."""
    home = Home(root).ensure()
    TrustStore(home.keys_dir).trust(key.public_key.pem(), "test publisher")
    if config:
        home.config_file.write_text(textwrap.dedent(config))
    return home
