"""Where the host meets the registry: sources from it, tools learned for it, swaps followed.

The registry never starts a plugin; this module does, once per installed version, to
learn its tools from the handshake. A running host follows the registry with
:func:`watch_registry`: a swap, rollback or removal made by ``mcphost plugin`` in another
process takes effect within one poll interval, and so does a key revocation made by
``mcphost keys revoke``: the workers of plugins signed by that key are stopped, and
verification refuses to start them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from mcphost.registry import RegistryReader, VersionRecord
from mcphost.sandbox.isolation import Grants, Limits
from mcphost.sandbox.settle import wait_out
from mcphost.sdk.errors import MCPHostError
from mcphost.sdk.schema import ToolSpec
from mcphost.security.permissions import Permissions
from mcphost.security.truststore import KeyRecord, TrustStore

from .config import HostConfig
from .home import Home
from .isolation_backend import isolation_backend
from .sources import PluginSource
from .supervisor import PluginSupervisor, SupervisorEnv

if TYPE_CHECKING:
    from .host import Host

__all__ = [
    "POLL_INTERVAL",
    "RETRY_INITIAL",
    "RETRY_MAX",
    "RegistryFailure",
    "check_names",
    "grants_for",
    "learn_tools",
    "limits_for",
    "missing_tools",
    "open_reader",
    "registry_sources",
    "source_for",
    "watch_registry",
]

log = logging.getLogger("mcphost.registry")

#: Seconds between two looks at the registry from a running host.
_T = TypeVar("_T")

POLL_INTERVAL = 0.25
#: Seconds before the first new try of a registry change that could not be applied;
#: each failure doubles it, up to :data:`RETRY_MAX`.
RETRY_INITIAL = 0.5
RETRY_MAX = 30.0


class RegistryFailure(msgspec.Struct, frozen=True, kw_only=True):
    """The last registry change a running host could not apply (``Host.registry_error``);
    it keeps serving what it served and tries again after ``retry_in`` seconds."""

    #: The plugin and version it could not switch to; ``None`` when reading the
    #: registry itself failed.
    plugin: str | None
    version: str | None
    reason: str
    #: Tries so far, this one included.
    attempts: int
    retry_in: float
    #: When it failed (seconds since the epoch).
    at: float


def grants_for(permissions: Permissions) -> Grants:
    """What the sandbox grants for a plugin's declared (and signed) permissions."""
    return Grants(
        network=list(permissions.network) if permissions.network is not None else None,
        read_paths=list(permissions.read_paths),
        write_paths=list(permissions.write_paths),
        env=list(permissions.env),
    )


def limits_for(permissions: Permissions) -> Limits | None:
    """The limits a plugin asked for; unset ones (``None``) take the host's default."""
    pl = permissions.limits
    values = {f: getattr(pl, f) for f in Limits.__struct_fields__}
    if all(v is None for v in values.values()):
        return None
    return Limits(**values)


def source_for(rec: VersionRecord) -> PluginSource:
    """The :class:`PluginSource` of one installed version."""
    return PluginSource(
        name=rec.plugin,
        version=rec.version,
        entry=rec.entry,
        paths=rec.paths,
        origin="registry",
        dist_info=rec.dist_info,
        root=rec.plugin_dir,
        tools=list(rec.tools) if rec.tools is not None else None,
        grants=grants_for(rec.permissions),
        limits=limits_for(rec.permissions),
        key_id=rec.key_id,
        approved=list(rec.approved.items) if rec.approved is not None else None,
    )


def open_reader(home: Home) -> RegistryReader | None:
    """The registry under ``home``, read-only; None until one has been created."""
    from mcphost.registry.damage import check_database_present, check_records

    if not check_database_present(home.registry_db, home.versions_dir, home.store_dir):
        return None
    reg = RegistryReader(
        db_path=home.registry_db, versions_dir=home.versions_dir, store_dir=home.store_dir
    )
    if not reg.ready:
        reg.close()
        return None
    try:
        check_records(reg.conn, home.registry_db, home.versions_dir, home.store_dir)
    except BaseException:
        reg.close()
        raise
    return reg


def registry_sources(home: Home) -> list[PluginSource]:
    """The active version of every plugin in the registry under ``home``."""
    reg = open_reader(home)
    if reg is None:
        return []
    with reg:
        return [source_for(r) for r in reg.active()]


def check_names(
    home: Home,
    config: HostConfig,
    tools: dict[str, list[ToolSpec] | None],
    changed: tuple[str, list[ToolSpec] | None] | None = None,
) -> None:
    """Refuse (:class:`~mcphost.sdk.errors.NameClash`, naming both sides) a change after
    which two plugins' tools, or a tool and a composition, would be exposed under one
    name. ``tools``: the active versions' tools by plugin; ``changed``: a plugin and the
    tools it would have (None to remove it)."""
    from .naming import build

    items = {name: [t.name for t in specs or []] for name, specs in tools.items()}
    if changed is not None:
        name, specs = changed
        items.pop(name, None)
        if specs is not None:
            items[name] = [t.name for t in specs]
    reserved: dict[str, str] = {}
    if config.features.composition and (home.root / "compositions.sqlite3").exists():
        from .compose.link import read_installed

        reserved = {c.name: f"composition {c.name}" for c, _, _ in read_installed(home)[1]}
    build(items, config.plugins, reserved, changed[0] if changed else None).check()


def missing_tools(old: list[ToolSpec] | None, new: list[ToolSpec] | None) -> list[str]:
    """Tools the old version has and the new one lacks (empty when either is unknown)."""
    if old is None or new is None:
        return []
    have = {t.name for t in new}
    return sorted(t.name for t in old if t.name not in have)


async def learn_tools(home: Home, config: HostConfig, source: PluginSource) -> list[ToolSpec]:
    """Start ``source`` once (verified, sandboxed, as the host would) and return the tools
    its handshake lists. The worker is stopped before this returns."""
    from .verification import make_verifier

    output: list[str] = []

    def on_log(plugin: str, level: str, message: str, call_id: int) -> None:
        log.debug("[%s] %s", plugin, message)
        output.append(message)
        del output[:-20]

    env = SupervisorEnv(
        config=config,
        backend=await asyncio.to_thread(isolation_backend, config),
        data_root=home.data_dir,
        run_root=home.run_dir,
        on_log=on_log,
        on_started=lambda plugin, version, pid: None,
        on_crashed=lambda plugin, version, reason: None,
        verify=make_verifier(home, config),
    )
    sup = PluginSupervisor(source, env)
    try:
        worker = await sup.acquire()
        assert worker.hello is not None
        return list(worker.hello.tools)
    except MCPHostError as exc:
        if output:
            exc.message += "; its last output: " + " | ".join(output[-5:])
            exc.args = (exc.message,)
        raise
    finally:
        await sup.stop()
        for t in list(env.tasks):
            t.cancel()
        await asyncio.gather(*env.tasks, return_exceptions=True)
        await env.stop_workers()  # and their jails released, as a host's close does


class _Follower:
    """Applies the registry's active versions to one running host.

    A change is applied when the registry's generation moves; one that fails to apply
    (in whole or for one plugin) is tried again with a capped exponential backoff until
    it succeeds or the registry changes again. SQLite and the trust store are read in
    threads: the event loop only switches routing.
    """

    def __init__(self, host: Host) -> None:
        self.host = host
        self.reg: RegistryReader | None = None
        self.data_version = -1
        self.generation = -1
        self.serials: dict[str, int] = {}
        #: A change not applied yet (new, or failed and waiting for its next try).
        self.due = False
        self.attempts = 0
        self.retry_at = 0.0
        self.trust = TrustStore(host.home.keys_dir)
        self.trust_stamp = self._trust_stamp()
        #: The read running in a thread, if any: the database is closed only after it.
        self._reading: asyncio.Future[Any] | None = None

    async def _in_thread(self, fn: Callable[[], _T]) -> _T:
        """``fn()`` in a thread. A thread cannot be stopped: when the watch is cancelled
        the read goes on, and :meth:`close` waits for it before closing the database."""
        fut = asyncio.get_running_loop().run_in_executor(None, fn)
        self._reading = fut
        return await asyncio.shield(fut)

    async def close(self) -> None:
        """Close the database once no read of it runs any more."""
        reading, self._reading = self._reading, None
        cancelled = reading is not None and await wait_out(reading)
        if reading is not None and not reading.cancelled():
            reading.exception()  # the watch, cancelled, no longer wants it
        if self.reg is not None:
            self.reg.close()
            self.reg = None
        if cancelled:
            raise asyncio.CancelledError

    def _served(self) -> dict[str, str]:
        return {s.name: s.version for s in self.host.plugins() if s.origin == "registry"}

    def poll(self) -> bool:
        """Whether the registry changed since the last look (cheap when it did not).
        Runs in a thread."""
        if self.reg is None:
            self.reg = open_reader(self.host.home)
            if self.reg is None:
                return False
            # What the host discovered at start is the baseline for resets.
            self.serials = {n: s for n, (_v, s) in self.reg.active_state().items()}
        dv = self.reg.data_version()
        if dv == self.data_version:
            return False
        self.data_version = dv
        gen = self.reg.generation()
        if gen == self.generation:
            return False
        self.generation = gen
        return True

    def _read_active(self) -> tuple[dict[str, tuple[str, int]], dict[str, VersionRecord]]:
        assert self.reg is not None
        return self.reg.active_state(), {r.plugin: r for r in self.reg.active()}

    async def step(self) -> None:
        """One look: apply a new or retried change when due, then the revocation list."""
        if await self._in_thread(self.poll):
            self.due, self.attempts, self.retry_at = True, 0, 0.0
        if self.due and time.monotonic() >= self.retry_at:
            try:
                failures = await self.apply()
            except Exception as exc:
                reason = exc.message if isinstance(exc, MCPHostError) else repr(exc)
                failures = [(None, None, f"cannot read the registry: {reason}")]
            self._settle(failures)
        if await self._in_thread(self.trust_changed):
            await self.stop_revoked()

    async def apply(self) -> list[tuple[str | None, str | None, str]]:
        """Make the host serve the registry's active versions; return what failed."""
        state, records = await self._in_thread(self._read_active)
        served = self._served()
        failures: list[tuple[str | None, str | None, str]] = []
        for name, (version, serial) in sorted(state.items()):
            rec = records.get(name)
            if rec is None:
                continue
            if served.get(name) != version:
                why = await self._activate(rec)
                if why is not None:
                    failures.append((name, version, why))
            if serial != self.serials.get(name, serial):
                with contextlib.suppress(MCPHostError):
                    self.host.reset_plugin(name)
                    log.info("plugin %s reset by the registry", name)
            self.serials[name] = serial
        for name in sorted(served.keys() - state.keys()):
            log.info("plugin %s is no longer active in the registry; stopping it", name)
            try:
                await self.host.deactivate(name)
            except Exception as exc:
                failures.append((name, None, f"could not stop it: {exc!r}"))
        return failures

    def _settle(self, failures: list[tuple[str | None, str | None, str]]) -> None:
        """Mark the change applied, or log each failure and schedule the next try."""
        if not failures:
            if self.attempts:
                log.info("the registry's state is applied after %d failed tries", self.attempts)
            self.due, self.attempts = False, 0
            self.host.registry_error = None
            return
        self.attempts += 1
        delay = min(RETRY_MAX, RETRY_INITIAL * 2.0 ** (self.attempts - 1))
        self.retry_at = time.monotonic() + delay
        for plugin, version, reason in failures:
            what = f"switch {plugin} to {version}" if version else f"apply {plugin or 'it'}"
            log.error(
                "could not apply a registry change: %s (try %d, next in %gs); the host keeps "
                "serving what it served: %s",
                what,
                self.attempts,
                delay,
                reason,
            )
            self.host.registry_error = RegistryFailure(
                plugin=plugin,
                version=version,
                reason=reason,
                attempts=self.attempts,
                retry_in=delay,
                at=time.time(),
            )

    def _trust_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.trust.revocation_file)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def trust_changed(self) -> bool:
        """Whether the revocation list changed since it was last acted on (one stat)."""
        return self._trust_stamp() != self.trust_stamp

    async def stop_revoked(self) -> None:
        """Stop the running workers of registry versions signed by a key that is revoked
        (or no longer trusted). The plugin stays routed: its next call starts it again,
        which verification refuses with an error naming the key. The change counts as
        handled only once the trust store could be read (in a thread)."""
        keys = {
            name: sup.source.key_id
            for name, sup in self.host._supervisors.items()
            if sup.source.origin == "registry"
            and sup.source.key_id is not None
            and sup.worker is not None
        }

        def read() -> tuple[tuple[int, int, int] | None, dict[str, KeyRecord | None]]:
            stamp = self._trust_stamp()
            return stamp, {k: self.trust.record(k) for k in set(keys.values()) if k}

        try:
            stamp, records = await self._in_thread(read)
        except MCPHostError as exc:
            log.error("cannot read the trust store: %s", exc.message)
            return
        for name, key_id in keys.items():
            sup = self.host._supervisors.get(name)
            if sup is None or sup.source.key_id != key_id or sup.worker is None:
                continue
            record = records.get(key_id or "")
            if record is not None and not record.revoked:
                continue
            what = "was revoked" if record is not None else "is no longer trusted"
            log.warning("key %s of plugin %s %s; stopping it", key_id, name, what)
            sup.stop_worker(f"was stopped: the key {key_id} that signed it {what}")
        self.trust_stamp = stamp

    async def _activate(self, rec: VersionRecord) -> str | None:
        """Serve ``rec``; ``None`` when done, else why not."""
        try:
            old = await self.host.activate(source_for(rec))
        except MCPHostError as exc:
            return exc.message
        except Exception as exc:
            log.exception("switching %s to %s failed", rec.plugin, rec.version)
            return repr(exc)
        log.info("plugin %s now serves %s (was %s)", rec.plugin, rec.version, old or "none")
        return None


async def watch_registry(host: Host, interval: float = POLL_INTERVAL) -> None:
    """Follow the registry under ``host.home`` until cancelled.

    Each poll reads SQLite's ``data_version`` (no disk I/O when nothing changed); on a
    change it compares the active versions with what the host serves and hot-swaps,
    starts or stops plugins to match. A change that fails to apply is logged, kept in
    ``host.registry_error`` and tried again with backoff; the watch goes on.
    """
    if not host.config.features.hot_swap:
        return
    follower = await asyncio.to_thread(_Follower, host)
    try:
        while True:
            try:
                await follower.step()
            except MCPHostError as exc:
                log.error("cannot follow the registry: %s", exc.message)
            except Exception:
                log.exception("cannot follow the registry")
            await asyncio.sleep(interval)
    finally:
        await follower.close()
