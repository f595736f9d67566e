"""A follower home: ``mcphost serve --http --follow URL`` keeps its registry and
configuration in step with a primary's (``serve --publish-registry``, :mod:`.publish`).

Every ``interval`` seconds the follower asks for the primary's state (with the last
``ETag`` it applied in full: an unchanged primary answers 304). When it changed:

1. each active and previous version it lacks is downloaded by its sha256 from the
   primary's store, the bytes' digest is checked, and the wheel goes through the same
   install path as ``mcphost plugin install`` on this home: verified against THIS
   home's trust store (a wheel signed by a key it does not trust is refused), the
   install policy, tools learned from one handshake, descriptions approved;
2. a plugin whose active version differs is switched as ``plugin swap`` / ``rollback``
   would (verified again before the switch), and a plugin active here but not on the
   primary (removed there) is removed; the host serving this home follows its registry
   and hot-swaps with drain, as for a change made with the CLI;
3. the primary's ``config.toml`` text replaces this home's when it differs; the host's
   live configuration path applies it (a refused one leaves the last good one running).

A refused wheel, a primary that cannot be reached or refuses the token: the follower
keeps serving what it has, logs the reason once (and again only when it changes),
writes it to ``<home>/following.json`` for ``mcphost status``, and tries again at the
next poll. That file also marks the home as following: CLI commands that would change
its registry or configuration refuse, naming the primary (:func:`refuse_if_following`).

The HTTP client is the standard library's (``urllib``, in a thread): no dependency, and
``https://`` URLs are verified against the system's certificate authorities.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from mcphost.sdk.errors import (
    ConfigError,
    FollowingHome,
    MCPHostError,
    PluginNotFound,
    RegistryError,
    VerificationError,
)

from .home import Home
from .publish import PublishedPlugin, PublishedState, PublishedVersion

if TYPE_CHECKING:
    from mcphost.registry import Registry, VersionRecord

    from .config import HostConfig

__all__ = [
    "DEFAULT_INTERVAL",
    "FOLLOW_FILE",
    "TOKEN_ENV",
    "Follower",
    "following",
    "read_token",
    "refuse_if_following",
]

log = logging.getLogger("mcphost.follow")

#: Seconds between two polls of the primary.
DEFAULT_INTERVAL = 3.0
#: Where a following home says whom it follows and how it is going (under its root).
FOLLOW_FILE = "following.json"
#: The environment variable holding the follower's token (or use a token file).
TOKEN_ENV = "MCPHOST_FOLLOW_TOKEN"
_TIMEOUT = 30.0
_MAX_STATE = 16 * 1024 * 1024
_MAX_WHEEL = 2 * 1024 * 1024 * 1024


def following(home: Home) -> dict[str, Any] | None:
    """What ``<home>/following.json`` says (None: the home follows no primary)."""
    try:
        data = json.loads((home.root / FOLLOW_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"primary": "(unreadable following.json)"}
    return data if isinstance(data, dict) else None


def refuse_if_following(home: Home, command: str) -> None:
    """Refuse a CLI change of the registry or configuration on a following home."""
    state = following(home)
    if state is None:
        return
    primary = state.get("primary", "?")
    raise FollowingHome(
        f"this home follows the primary at {primary} (`mcphost serve --follow`): `{command}` "
        "must be run on the primary's home, and reaches this one from there. To make this "
        f"home independent again, stop the following server and delete {home.root / FOLLOW_FILE}",
        data={"primary": primary},
    )


def read_token(token_file: Path | None) -> str:
    """The follower's token: from ``token_file``, else ``$MCPHOST_FOLLOW_TOKEN``."""
    if token_file is not None:
        try:
            secret = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the follow token file {token_file}: {exc.strerror or exc}"
            ) from None
        if not secret:
            raise ConfigError(f"the follow token file {token_file} is empty")
        return secret
    secret = os.environ.get(TOKEN_ENV, "").strip()
    if not secret:
        raise ConfigError(
            f"--follow needs the follower's token: put it in ${TOKEN_ENV} or in a file named "
            "by --follow-token-file (make it on the primary with `mcphost tokens create NAME "
            "--follow`); a secret is never given on the command line"
        )
    return secret


# The primary's answer, as :mod:`.publish` writes it.
_state_decoder = msgspec.json.Decoder(PublishedState)


class _Refused(Exception):
    """The primary refused the token (401/403): following cannot work until it is fixed."""


class Follower:
    """Keeps ``home`` in step with the primary at ``url`` (its MCP endpoint's URL)."""

    def __init__(
        self, home: Home, url: str, token: str, *, interval: float = DEFAULT_INTERVAL
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"--follow {url!r}: give the primary's MCP endpoint URL, e.g. "
                "http://primary:8765/mcp (what its `serve --http` prints)"
            )
        if interval <= 0:
            raise ConfigError("--follow-interval must be more than 0 seconds")
        self.home = home
        self.url = url.rstrip("/")
        self.token = token
        self.interval = interval
        self.etag: str | None = None
        self.generation: int | None = None
        self.error: str | None = None
        self.last_contact: float | None = None
        self.last_change: float | None = None
        self.since = time.time()
        self._said: str | None = None
        #: Refused wheels by digest: (the trust stamp they were refused under, why).
        self._refused: dict[str, tuple[tuple[tuple[str, int, int], ...], str]] = {}

    # -- HTTP ------------------------------------------------------------------------
    def _get(
        self,
        path: str,
        etag: str | None = None,
        limit: int = _MAX_STATE,
        timeout: float = _TIMEOUT,
    ) -> tuple[int, str | None, bytes]:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.url + "/registry/" + path)
        req.add_header("Authorization", f"Bearer {self.token}")
        if etag is not None:
            req.add_header("If-None-Match", etag)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                body = resp.read(limit + 1)
                if len(body) > limit:
                    raise RegistryError(f"the primary's answer to {path} is over {limit} bytes")
                return resp.status, resp.headers.get("ETag"), body
        except urllib.error.HTTPError as exc:
            text = exc.read(4096).decode("utf-8", "replace").strip()
            if exc.code == 304:
                return 304, etag, b""
            if exc.code in (401, 403):
                raise _Refused(
                    f"the primary at {self.url} refused the follow token ({exc.code}: {text}); "
                    "make a token with `mcphost tokens create NAME --follow` on the primary"
                ) from None
            if exc.code == 404 and path == "state":
                raise RegistryError(
                    f"{self.url} publishes no registry (404): start the primary's server with "
                    "`mcphost serve --http ... --publish-registry`, and give --follow its MCP "
                    "endpoint URL"
                ) from None
            raise RegistryError(f"the primary answered {exc.code} to {path}: {text}") from None

    # -- one poll --------------------------------------------------------------------
    def poll(self) -> bool:
        """Ask the primary once and apply what changed; True when in step. Never raises
        for the primary's or a wheel's trouble: it is recorded (:attr:`error`) instead."""
        try:
            status, etag, body = self._get("state", self.etag)
            self.last_contact = time.time()
            if status == 304:
                self._ok()
                return True
            state = _state_decoder.decode(body)
            if state.format != 1:
                raise RegistryError(
                    f"the primary publishes state format {state.format}; this mcphost reads "
                    "format 1: run the same mcphost version on the primary and its followers"
                )
            problems = self.apply(state)
        except _Refused as exc:
            self._trouble(str(exc))
            return False
        except OSError as exc:  # urllib's URLError included
            reason = getattr(exc, "reason", exc)
            self._trouble(
                f"the primary at {self.url} cannot be reached ({reason}); serving the last "
                "state received"
            )
            return False
        except (MCPHostError, msgspec.DecodeError) as exc:
            self._trouble(getattr(exc, "message", str(exc)))
            return False
        self.generation = state.generation
        if problems:
            # The ETag is kept only for a state applied in full: the next poll tries again.
            self._trouble("; ".join(problems))
            return False
        self.etag = etag
        self._ok()
        return True

    def check_token(self) -> None:
        """At start: a token the primary refuses is a configuration error (raised)."""
        try:
            self._get("state", timeout=5.0)  # a primary that does not answer is not waited for
        except _Refused as exc:
            raise ConfigError(str(exc)) from None
        except (MCPHostError, OSError, msgspec.DecodeError):
            pass  # unreachable or not publishing yet: the polls say so and go on

    def apply(self, state: PublishedState) -> list[str]:
        """Bring the registry and config.toml in step with ``state``; the problems left."""
        from mcphost.registry import Registry

        from .config import load_config

        problems: list[str] = []
        cfg = load_config(self.home.config_file)
        changed = False
        with Registry.open(self.home.ensure(), allow_unsigned=cfg.allow_unsigned) as reg:
            for name, plugin in sorted(state.plugins.items()):
                try:
                    changed |= self._follow_plugin(reg, cfg, name, plugin)
                except MCPHostError as exc:
                    named = exc.message.startswith(f"{name} ")
                    problems.append(exc.message if named else f"{name}: {exc.message}")
            for name in sorted(set(reg.active_state()) - set(state.plugins)):
                # Not active on the primary (removed there): the mirror removes it too.
                try:
                    reg.remove(name, force=True, reason=f"following {self.url}: not on it")
                    log.info("following %s: removed %s (not active on the primary)", self.url, name)
                    changed = True
                except MCPHostError as exc:
                    problems.append(f"{name}: {exc.message}")
        changed |= self._follow_config(state.config)
        if changed:
            self.last_change = time.time()
        return problems

    def _follow_plugin(
        self, reg: Registry, cfg: HostConfig, name: str, plugin: PublishedPlugin
    ) -> bool:
        from .cli.plugin import switch_version

        installed: dict[str, VersionRecord] = {}
        with contextlib.suppress(PluginNotFound):
            installed = {r.version: r for r in reg.versions(name)}
        problems: list[str] = []
        wanted = [plugin.active] + ([plugin.previous] if plugin.previous is not None else [])
        for v in wanted:
            rec = installed.get(v.version)
            if rec is not None:
                if rec.wheel_sha256 != v.sha256:
                    raise RegistryError(
                        f"{name} {v.version} is installed here from another wheel (sha256 "
                        f"{rec.wheel_sha256[:16]}) than the primary's ({v.sha256[:16]}); remove "
                        f"it here (delete {self.home.root / FOLLOW_FILE}, `mcphost plugin "
                        "remove`) or publish another version on the primary"
                    )
                continue
            try:
                self._install(reg, cfg, name, v, plugin.owner_key)
            except MCPHostError as exc:
                if v is plugin.active:
                    raise
                problems.append(f"previous version {v.version}: {exc.message}")
        current = reg.plugin(name).active_version
        if current != plugin.active.version:
            rec = reg.version(name, plugin.active.version)
            action = plugin.action if plugin.action in ("swap", "rollback") else "swap"
            switch_version(
                self.home,
                cfg,
                reg,
                rec,
                action=action,
                allow_missing=True,
                command=f"mcphost plugin swap {name} {rec.version}",
                reason=f"following {self.url}",
                force=True,
                yes=True,
            )
            log.info("following %s: %s %s -> %s", self.url, name, current, rec.version)
        if problems:
            raise RegistryError("; ".join(problems))
        return current != plugin.active.version

    def _install(
        self, reg: Registry, cfg: HostConfig, name: str, v: PublishedVersion, owner: str | None
    ) -> None:
        """Download, check the digest, and install as `plugin install` does (inactive).

        A refused wheel is not downloaded again (nor its refusal audited again) until
        this home's trust store or configuration changes."""
        stamp = self._trust_stamp()
        refused = self._refused.get(v.sha256)
        if refused is not None and refused[0] == stamp:
            raise VerificationError(refused[1], data={"plugin": name, "version": v.version})
        try:
            self._download_and_install(reg, cfg, name, v, owner)
        except MCPHostError as exc:
            what = f"{name} {v.version} (sha256 {v.sha256[:16]}) from the primary is refused"
            message = f"{what}: {exc.message}"
            self._refused[v.sha256] = (stamp, message)
            raise type(exc)(message, data=exc.data) from None

    def _trust_stamp(self) -> tuple[tuple[str, int, int], ...]:
        """Changes when this home's trust store or config.toml changes."""
        out: list[tuple[str, int, int]] = []
        paths = [self.home.config_file]
        with contextlib.suppress(OSError):
            paths += sorted(self.home.keys_dir.rglob("*"))
        for path in paths:
            with contextlib.suppress(OSError):
                st = path.stat()
                out.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(out)

    def _download_and_install(
        self, reg: Registry, cfg: HostConfig, name: str, v: PublishedVersion, owner: str | None
    ) -> None:
        from mcphost.registry.approvals import items_of_tools
        from mcphost.registry.store import wheel_path

        from .cli.plugin import check_policy, ensure_tools

        local = wheel_path(self.home.store_dir, v.sha256)
        tmp: Path | None = None
        if local.is_file():
            source = local
        else:
            _status, _etag, data = self._get(f"wheels/{v.sha256}", limit=_MAX_WHEEL)
            got = hashlib.sha256(data).hexdigest()
            if got != v.sha256:
                raise VerificationError(
                    f"the wheel downloaded has sha256 {got[:16]}, not the one published"
                )
            incoming = self.home.run_dir / "follow"
            incoming.mkdir(parents=True, exist_ok=True)
            tmp = incoming / f"{v.sha256}.{secrets.token_hex(4)}.whl"
            tmp.write_bytes(data)
            source = tmp
        try:
            try:
                # Trust first (this home's store); the name's owner is the primary's
                # decision: a key change it made is followed, for a key trusted here.
                checked = reg.check(source, allow_key_change=True)
                if checked.plugin != name or checked.version != v.version:
                    raise VerificationError(
                        f"the wheel is {checked.plugin} {checked.version}, not what was published"
                    )
                check_policy(checked, cfg)
                result = reg.install(
                    checked,
                    activate=False,
                    allow_key_change=checked.key_id is not None and checked.key_id == owner,
                    reason=f"following {self.url}",
                )
            except MCPHostError as exc:
                # The message names the downloaded file, a temporary name: say the digest.
                raise type(exc)(
                    exc.message.replace(f"{source}: ", "").replace(str(source), "the wheel"),
                    data=exc.data,
                ) from None
            rec = ensure_tools(self.home, cfg, reg, reg.version(name, result.version))
            if rec.approved is None:
                reg.approve(rec.plugin, rec.version, items_of_tools(rec.tools or []))
            log.info("following %s: installed %s %s", self.url, name, v.version)
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)

    def _follow_config(self, text: str) -> bool:
        path = self.home.config_file
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = ""
        if current == text:
            return False
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        log.info("following %s: config.toml replaced by the primary's", self.url)
        return True

    # -- reporting -------------------------------------------------------------------
    def _ok(self) -> None:
        if self.error is not None:
            log.warning("following %s: in step again", self.url)
        self.error = None
        self._said = None
        self.write_status()

    def _trouble(self, why: str) -> None:
        self.error = why
        if why != self._said:
            log.warning("following %s: %s", self.url, why)
            self._said = why
        self.write_status()

    def write_status(self) -> None:
        data = {
            "primary": self.url,
            "pid": os.getpid(),
            "since": self.since,
            "interval": self.interval,
            "generation": self.generation,
            "in_step": self.error is None and self.last_contact is not None,
            "error": self.error,
            "last_contact": self.last_contact,
            "last_change": self.last_change,
            "updated": time.time(),
        }
        path = self.home.root / FOLLOW_FILE
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    # -- the loop --------------------------------------------------------------------
    async def run(self) -> None:
        """Poll until cancelled (each poll runs in a thread: it may download and install)."""
        self.write_status()
        while True:
            await asyncio.to_thread(self.poll)
            await asyncio.sleep(self.interval)
