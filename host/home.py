"""Where mcphost keeps its state: one home directory and its fixed layout."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
from functools import cached_property
from pathlib import Path

from mcphost.sdk.errors import ConfigError

__all__ = ["Home", "default_home"]

log = logging.getLogger("mcphost.host")


def default_home() -> Path:
    """``$MCPHOST_HOME``, else ``$XDG_DATA_HOME/mcphost``, else ``~/.local/share/mcphost``."""
    env = os.environ.get("MCPHOST_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "mcphost"


class Home:
    """The paths under one mcphost home; :meth:`ensure` creates them.

    A home on a read-only file system is read where it stands; what a running host must
    write (the workers' scratch and data directories) then lives in a private directory
    outside it, and nothing a plugin saves there is kept.
    """

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
    def tokens_file(self) -> Path:
        """Bearer tokens of ``mcphost serve --http``, as hashes (mode 0600)."""
        return self.root / "tokens.json"

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

    @cached_property
    def writable(self) -> bool:
        """Whether this process may write to the home (False on a read-only mount)."""
        probe = self.root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return os.access(probe, os.W_OK)

    @property
    def data_dir(self) -> Path:
        """Per-plugin private, writable data directories (outside a read-only home)."""
        return self.root / "data" if self.writable else self.scratch_dir / "data"

    @property
    def run_dir(self) -> Path:
        """Scratch space for running workers (outside a read-only home)."""
        return self.root / "run" if self.writable else self.scratch_dir / "run"

    @property
    def scratch_dir(self) -> Path:
        """Where a host on a read-only home writes: private to this user and home."""
        tag = hashlib.sha256(os.fsencode(self.root)).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"mcphost-{os.getuid()}" / tag

    def plugin_data(self, plugin: str) -> Path:
        return self.data_dir / plugin

    def ensure(self) -> Home:
        if not self.writable:
            self._ensure_scratch()
            return self
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

    def _ensure_scratch(self) -> None:
        """Create the private scratch directory, refusing one another user could have
        prepared (a shared temp directory is anyone's to write)."""
        top = self.scratch_dir.parent
        for d in (top, self.scratch_dir):
            try:
                d.mkdir(mode=0o700, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"the mcphost home {self.root} is read-only and {d} cannot be created "
                    f"for the workers: {exc.strerror or exc}; set TMPDIR to a writable "
                    "directory"
                ) from None
            st = os.lstat(d)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
                raise ConfigError(
                    f"{d} is not a private directory of this user; remove it or set TMPDIR "
                    "to another directory"
                )
        for d in (self.data_dir, self.run_dir):
            d.mkdir(mode=0o700, exist_ok=True)
        log.info("the home %s is read-only; workers write under %s", self.root, self.scratch_dir)
