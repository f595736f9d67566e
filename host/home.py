"""Where mcphost keeps its state: one home directory and its fixed layout."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Literal

from mcphost.sdk.errors import ConfigError, HomeError, HomeNotFound
from mcphost.sdk.text import printable

__all__ = ["Home", "HomeState", "default_home"]

log = logging.getLogger("mcphost.host")

#: What is at a home's path: nothing yet, an empty directory (a home with nothing in it
#: yet), a home, a directory that holds other things, or a part of another home (its
#: ``keys`` directory, say).
HomeState = Literal["missing", "empty", "home", "foreign", "inside"]

#: The entries of a home, name -> whether it is a directory. Any one of them, of its
#: kind, marks a directory as a home: every home mcphost ever made has one (a home
#: written by hand has at least its config.toml). ``data`` and ``run`` are names too
#: common to mark a home; their kind is checked once a directory is known as one.
_MARKERS = {
    "config.toml": False,
    "registry.sqlite3": False,
    "audit.jsonl": False,
    "tokens.json": False,
    "keys": True,
    "store": True,
    "versions": True,
}
_ENTRIES = {**_MARKERS, "data": True, "run": True}
#: What only mcphost makes: a directory holding one of these is a home for sure, and a
#: path under its own entries (``<home>/keys``) is refused. ``config.toml`` and ``keys``
#: are common names: an application's folder may hold them and host a home under it.
_MADE = {name: _MARKERS[name] for name in ("registry.sqlite3", "audit.jsonl", "tokens.json")}
_MADE_TOGETHER = ("store", "versions")
_WHAT = {
    "config.toml": "its configuration",
    "registry.sqlite3": "its registry database",
    "audit.jsonl": "its audit log",
    "tokens.json": "its bearer tokens",
    "keys": "its trusted keys",
    "store": "its wheels",
    "versions": "its installed versions",
    "data": "the plugins' data",
    "run": "the workers' scratch space",
}
#: Where to look when the path is wrong, in every message about a home's path.
CHECK = "check --home / MCPHOST_HOME"


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
        path = Path(root).expanduser() if root else default_home()
        try:
            self.root = path.resolve()
        except RuntimeError:  # a symlink loop: :meth:`state` says so, naming the path
            self.root = Path(os.path.abspath(path))

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
        """Create the home's directories where they are missing (the home too)."""
        if not self.writable:
            self._ensure_scratch()
            return self
        try:
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
        except OSError as exc:
            self.state()  # says what is wrong with the path or with a part of the home
            raise self._unusable(exc) from None
        return self

    # -- what is at the path -------------------------------------------------------
    def state(self) -> HomeState:
        """What is at the home's path. Raises :class:`HomeError` for a path that cannot
        be a home (a file, under a file, unreachable, unreadable) and for a home with
        an entry of the wrong kind (a file where its ``keys`` directory belongs)."""
        if self.enclosing() is not None:
            return "inside"
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            raise self._unusable(exc) from None
        if not stat.S_ISDIR(st.st_mode):
            raise HomeError(
                f"cannot use {self.root} as the mcphost home: it is {_kind(st.st_mode)}, "
                f"not a directory; {CHECK}",
                data={"home": str(self.root)},
            )
        try:
            names = os.listdir(self.root)
        except OSError as exc:
            raise self._unusable(exc) from None
        if not names:
            return "empty"
        kinds = {name: self._is_dir(name) for name in _ENTRIES if name in names}
        if not _marked(kinds):
            return "foreign"
        for name, is_dir in kinds.items():
            if is_dir != _ENTRIES[name]:
                path = self.root / name
                want = "a directory" if _ENTRIES[name] else "a file"
                raise HomeError(
                    f"the mcphost home {self.root} is damaged: {path} is not {want} "
                    f"(mcphost keeps {_WHAT[name]} there); move it away or restore it",
                    data={"home": str(self.root), "path": str(path)},
                )
        return "home"

    def enclosing(self) -> tuple[Path, str] | None:
        """The home this path is a part of, and which part (``keys``, ``data``, ...):
        a path under a home's own entries is never a home itself."""
        for parent in self.root.parents:
            part = self.root.relative_to(parent).parts[0]
            if part not in _ENTRIES:
                continue
            try:
                names = os.listdir(parent)
            except OSError:
                continue
            kinds = {}
            for name in (*_MADE, *_MADE_TOGETHER):
                if name in names:
                    with contextlib.suppress(OSError):
                        kinds[name] = stat.S_ISDIR(os.stat(parent / name).st_mode)
            made = any(kinds.get(name) is False for name in _MADE)
            if made or all(kinds.get(name) for name in _MADE_TOGETHER):
                return parent, part
        return None

    def _part_of(self) -> str:
        found = self.enclosing()
        assert found is not None
        parent, part = found
        return f"it is inside the mcphost home {parent}, where it keeps {_WHAT[part]}"

    def require(self) -> Home:
        """This home as it is, for a command that only reads: raise
        :class:`HomeNotFound` when there is no home at its path."""
        found = self.state()
        if found == "inside":
            raise HomeNotFound(
                f"no mcphost home at {self.root}: {self._part_of()}; {CHECK}",
                data={"home": str(self.root)},
            )
        if found == "missing":
            raise HomeNotFound(
                f"no mcphost home at {self.root} (run `mcphost plugin install` or "
                f"`mcphost keys trust` to create one, or {CHECK})",
                data={"home": str(self.root)},
            )
        if found == "foreign":
            raise HomeNotFound(
                f"no mcphost home at {self.root}: that directory holds {self.contents()} "
                f"and none of a home's files; {CHECK}",
                data={"home": str(self.root)},
            )
        return self

    def create(self) -> Home:
        """This home, made when missing, for a command that creates one. A directory
        that is neither empty nor a home is refused, never filled."""
        found = self.state()
        if found == "inside":
            raise HomeError(
                f"cannot use {self.root} as the mcphost home: {self._part_of()}; {CHECK}",
                data={"home": str(self.root)},
            )
        if found == "foreign":
            raise HomeError(
                f"{self.root} is not an mcphost home and not empty (it holds "
                f"{self.contents()}); give --home / MCPHOST_HOME an empty or new "
                "directory, or the path of an existing home",
                data={"home": str(self.root)},
            )
        if found == "missing":
            try:
                self.root.mkdir(parents=True, mode=0o700)
            except OSError as exc:
                raise self._unusable(exc, "create") from None
            self.__dict__.pop("writable", None)  # it was judged by the parent
        return self.ensure()

    def contents(self, limit: int = 6) -> str:
        """Some of the names in the home's directory, for a message."""
        try:
            names = sorted(os.listdir(self.root))
        except OSError:
            return "entries that cannot be listed"
        shown = ", ".join(printable(n) for n in names[:limit])
        return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")

    def _is_dir(self, name: str) -> bool:
        try:
            return stat.S_ISDIR(os.stat(self.root / name).st_mode)
        except OSError as exc:
            raise self._unusable(exc) from None

    def _unusable(self, exc: OSError, verb: str = "use") -> HomeError:
        """A one-line error for an OS error on the home's path: what, where, why."""
        where = Path(exc.filename) if exc.filename else self.root
        why = exc.strerror or str(exc)
        if isinstance(exc, NotADirectoryError):
            for p in (where, *where.parents):
                with contextlib.suppress(OSError):
                    mode = os.stat(p).st_mode
                    if not stat.S_ISDIR(mode):
                        why = f"{p} is {_kind(mode)}, not a directory"
                        break
        elif where != self.root:
            why = f"{where}: {why}"
        return HomeError(
            f"cannot {verb} {self.root} as the mcphost home: {why}; {CHECK}",
            data={"home": str(self.root), "path": str(where)},
        )

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


def _marked(kinds: dict[str, bool]) -> bool:
    """Whether entries found in a directory (name -> is a directory) mark it as a home."""
    return any(kinds[name] == is_dir for name, is_dir in _MARKERS.items() if name in kinds)


def _kind(mode: int) -> str:
    return "a file" if stat.S_ISREG(mode) else "a special file"
