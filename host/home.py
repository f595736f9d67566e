"""Where mcphost keeps its state: one home directory and its fixed layout."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["Home", "default_home"]


def default_home() -> Path:
    """``$MCPHOST_HOME``, else ``$XDG_DATA_HOME/mcphost``, else ``~/.local/share/mcphost``."""
    env = os.environ.get("MCPHOST_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "mcphost"


class Home:
    """The paths under one mcphost home; :meth:`ensure` creates them."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser().resolve() if root else default_home().resolve()

    @property
    def config_file(self) -> Path:
        return self.root / "config.toml"

    @property
    def keys_dir(self) -> Path:
        """The trust store: trusted public keys and the revocation list."""
        return self.root / "keys"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def registry_db(self) -> Path:
        return self.root / "registry.sqlite3"

    @property
    def store_dir(self) -> Path:
        """Content-addressed wheels, by sha256."""
        return self.root / "store"

    @property
    def versions_dir(self) -> Path:
        """One read-only directory per installed plugin version."""
        return self.root / "versions"

    @property
    def data_dir(self) -> Path:
        """Per-plugin private, writable data directories."""
        return self.root / "data"

    @property
    def run_dir(self) -> Path:
        """Scratch space for running workers."""
        return self.root / "run"

    def plugin_data(self, plugin: str) -> Path:
        return self.data_dir / plugin

    def ensure(self) -> Home:
        # The home holds keys, the trust store and the audit log: its owner's alone.
        if not self.root.exists():
            self.root.mkdir(parents=True, mode=0o700)
        for d in (
            self.keys_dir,
            self.store_dir,
            self.versions_dir,
            self.data_dir,
            self.run_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)
        return self
