"""A plugin written as one module in a directory of its own, served as a directory
source: what most host tests need without building a wheel."""

from __future__ import annotations

import textwrap
from pathlib import Path

from mcphost.host import PluginSource


def directory_source(folder: Path, name: str, code: str, *, version: str = "1.0.0") -> PluginSource:
    """Write ``<name>.py`` (dedented ``code``) into ``folder`` (made if missing) and
    return the source that serves it (entry point ``<name>:plugin``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(code), encoding="utf-8")
    return PluginSource(
        name=name,
        version=version,
        entry=f"{name}:plugin",
        paths=[str(folder)],
        origin="directory",
        root=str(folder),
    )
