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
from typing import TYPE_CHECKING

from mcphost.registry import RegistryReader, VersionRecord
from mcphost.sandbox.isolation import Grants, Limits
from mcphost.sdk.errors import MCPHostError
from mcphost.sdk.schema import ToolSpec
from mcphost.security.permissions import Permissions
from mcphost.security.truststore import TrustStore

from .config import HostConfig
from .home import Home
from .policy import isolation_backend
from .sources import PluginSource
from .supervisor import PluginSupervisor, SupervisorEnv

if TYPE_CHECKING:
    from .host import Host

__all__ = [
    "POLL_INTERVAL",
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
POLL_INTERVAL = 0.25


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
        backend=isolation_backend(config),
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


class _Follower:
    """Applies the registry's active versions to one running host."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.reg: RegistryReader | None = None
        self.data_version = -1
        self.generation = -1
        self.serials: dict[str, int] = {}
        #: Plugin -> version that failed to start here; not retried until it changes.
        self.refused: dict[str, str] = {}
        self.trust = TrustStore(host.home.keys_dir)
        self.trust_stamp = self._trust_stamp()

    def _served(self) -> dict[str, str]:
        return {s.name: s.version for s in self.host.plugins() if s.origin == "registry"}

    def poll(self) -> bool:
        """Whether the registry changed since the last look (cheap when it did not)."""
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

    async def apply(self) -> None:
        assert self.reg is not None
        state = self.reg.active_state()
        records = {r.plugin: r for r in self.reg.active()}
        served = self._served()
        for name, (version, serial) in sorted(state.items()):
            rec = records.get(name)
            if rec is None:
                continue
            if served.get(name) != version and self.refused.get(name) != version:
                await self._activate(rec)
            if serial != self.serials.get(name, serial):
                with contextlib.suppress(MCPHostError):
                    self.host.reset_plugin(name)
                    log.info("plugin %s reset by the registry", name)
            self.serials[name] = serial
        for name in sorted(served.keys() - state.keys()):
            log.info("plugin %s is no longer active in the registry; stopping it", name)
            await self.host.deactivate(name)
            self.refused.pop(name, None)

    def _trust_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.trust.revocation_file)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def trust_changed(self) -> bool:
        """Whether the revocation list changed since it was last acted on (one stat)."""
        return self._trust_stamp() != self.trust_stamp

    def stop_revoked(self) -> None:
        """Stop the running workers of registry versions signed by a key that is revoked
        (or no longer trusted). The plugin stays routed: its next call starts it again,
        which verification refuses with an error naming the key. The change counts as
        handled only once the trust store could be read."""
        stamp = self._trust_stamp()
        for name, sup in list(self.host._supervisors.items()):
            source, worker = sup.source, sup.worker
            if source.origin != "registry" or source.key_id is None or worker is None:
                continue
            try:
                record = self.trust.record(source.key_id)
            except MCPHostError as exc:
                log.error("cannot read the trust store: %s", exc.message)
                return
            if record is not None and not record.revoked:
                continue
            what = "was revoked" if record is not None else "is no longer trusted"
            log.warning("key %s of plugin %s %s; stopping it", source.key_id, name, what)
            sup.stop_worker(f"was stopped: the key {source.key_id} that signed it {what}")
        self.trust_stamp = stamp

    async def _activate(self, rec: VersionRecord) -> None:
        try:
            old = await self.host.activate(source_for(rec))
        except MCPHostError as exc:
            self.refused[rec.plugin] = rec.version
            log.error(
                "could not switch %s to %s; it keeps serving what it served: %s",
                rec.plugin,
                rec.version,
                exc.message,
            )
            return
        self.refused.pop(rec.plugin, None)
        log.info("plugin %s now serves %s (was %s)", rec.plugin, rec.version, old or "none")


async def watch_registry(host: Host, interval: float = POLL_INTERVAL) -> None:
    """Follow the registry under ``host.home`` until cancelled.

    Each poll reads SQLite's ``data_version`` (no disk I/O when nothing changed); on a
    change it compares the active versions with what the host serves and hot-swaps,
    starts or stops plugins to match. Errors are logged; the watch goes on.
    """
    if not host.config.features.hot_swap:
        return
    follower = _Follower(host)
    try:
        while True:
            try:
                if follower.poll():
                    await follower.apply()
                if follower.trust_changed():
                    follower.stop_revoked()
            except MCPHostError as exc:
                log.error("cannot follow the registry: %s", exc.message)
            except Exception:
                log.exception("cannot follow the registry")
            await asyncio.sleep(interval)
    finally:
        if follower.reg is not None:
            follower.reg.close()
