"""The embeddable :class:`Host`: discovers plugins, routes calls, owns every worker.

>>> async with Host() as host:
...     await host.call("textkit.upper", {"text": "hi"})
'HI'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from mcphost.sandbox.asking import AskHandler, HostAsker, current_asker
from mcphost.sandbox.client import CallLogCallback, ProgressCallback
from mcphost.sandbox.isolation import IsolationBackend
from mcphost.sdk.errors import (
    CompositionUnavailable,
    ConfigError,
    InvalidArguments,
    PluginError,
    PluginNotFound,
    ToolNotFound,
    VerificationError,
)
from mcphost.sdk.schema import ToolSpec

from . import features
from .batch.batcher import ToolBatcher, batch_parameter
from .batch.keys import key_function
from .batch.settings import resolve
from .config import HostConfig, PluginSettings, load_config
from .home import Home
from .hooks import make_plugin_manager
from .isolation_backend import isolation_backend
from .naming import NameMap, build, canonical
from .observe import HostMetrics, RouteStats
from .pool import Supervised, WorkerPool, make_supervisor, reconfigure
from .sources import (
    PluginSource,
    discover_directory,
    discover_environment,
    discover_plugin_path,
)
from .supervisor import SupervisorEnv
from .tool_info import ToolInfo

if TYPE_CHECKING:
    from .batch.explicit import BatchOutcome
    from .compose import Composition, Served
    from .config_watch import PendingSetting
    from .flow import Flow
    from .observe.control import ControlServer
    from .observe.tracing import Tracing
    from .registry_link import RegistryFailure
    from .verification import Verifier

__all__ = ["Host", "HostEvent", "ToolInfo"]

log = logging.getLogger("mcphost.host")
plugin_log = logging.getLogger("mcphost.plugin")


class HostEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Something listeners may want to know: ``kind`` is "tools_changed", "log",
    "plugin_started", "plugin_crashed", "plugin_swapped" or "plugin_replaced" (a wedged
    worker was replaced by a new one of the same version; ``message`` says why) or
    "resource_updated" (the plugin's resource ``message``, a URI, changed). A "log"
    event's ``call_id`` is the worker's id of the call that wrote the line, 0 for lines
    outside any call (what a plugin prints, or logs at import); a call's own lines also
    reach that call's ``on_log``."""

    kind: str
    plugin: str = ""
    version: str = ""
    level: str = ""
    message: str = ""
    call_id: int = 0


Listener = Callable[[HostEvent], None]

#: The ``message`` of a "tools_changed" event that follows the operator's change of
#: names (``[plugins.NAME] expose``, renames), which may rename prompts as well.
RENAMED = "renamed"

#: Where the calls of a name go: its supervisor, the tool, the plugin's name, the tool's
#: batcher (None: none), and the name's call counts (None: no metrics). Kept until the
#: routes are forgotten: when a plugin is added, removed or reconfigured, a supervisor
#: routes to a new worker (whose tools may differ), names or batching settings change.
_Route = tuple[Supervised, str, str, ToolBatcher | None, RouteStats | None]


class Host:
    """Runs plugins in sandboxed workers and offers their tools to callers.

    ``home``: where state lives (default ``$MCPHOST_HOME``). ``sources``: extra plugin
    versions to serve. ``plugin_dirs``: directories plugins were installed into.
    ``environment``: also serve plugins installed in this Python environment and in
    the directories named by ``$MCPHOST_PLUGIN_PATH``.
    ``registry``: also serve the registry's active versions (when it exists).
    ``hooks``: objects with pluggy ``@hookimpl`` methods (see :mod:`mcphost.host.hooks`).
    ``metrics``: count calls, workers and swaps into ``host.metrics`` (see
    :mod:`mcphost.host.observe`; False leaves ``host.metrics`` None).
    ``tracing``: a span for every call (:mod:`mcphost.host.observe.tracing`): None
    follows the ``OTEL_*`` environment, True traces with the process's OpenTelemetry
    tracer provider, a ``TracerProvider`` traces with that one, False never traces.
    ``status``: answer ``mcphost status`` on a control socket under the home's run
    directory (:mod:`mcphost.host.observe.control`); None follows ``features.status``.
    """

    def __init__(
        self,
        home: str | Path | Home | None = None,
        *,
        config: HostConfig | None = None,
        sources: Iterable[PluginSource] = (),
        plugin_dirs: Iterable[str | Path] = (),
        environment: bool = True,
        registry: bool = True,
        hooks: Iterable[object] = (),
        isolation: str | None = None,
        metrics: bool = True,
        tracing: bool | Any = None,
        status: bool | None = None,
        sampling_handler: AskHandler | None = None,
        elicitation_handler: AskHandler | None = None,
    ) -> None:
        self.home = home if isinstance(home, Home) else Home(home)
        #: Answers tools' sampling and elicitation asks made with no MCP client (and for
        #: clients without the capability): async functions from the MCP request's
        #: params to its result. None when the app gave neither.
        self.asker: HostAsker | None = (
            HostAsker(sampling_handler, elicitation_handler)
            if sampling_handler is not None or elicitation_handler is not None
            else None
        )
        self._config = config
        self._extra_sources = list(sources)
        self._plugin_dirs = [Path(p) for p in plugin_dirs]
        self._use_environment = environment
        self._use_registry = registry
        self.hooks = make_plugin_manager(list(hooks))
        #: Whether any call hook (authorize, before, after) has an implementation, as of
        #: the hooks' registration generation ``_hooks_seen``.
        self._call_hooks = False
        self._hooks_seen = -1
        self._isolation = isolation
        self._supervisors: dict[str, Supervised] = {}
        #: Called name -> the route its calls take (:data:`_Route`), kept while good.
        self._routes: dict[str, _Route] = {}
        #: Plugins being removed, while their calls drain.
        self._leaving: dict[str, Supervised] = {}
        #: ``<plugin>.<tool>`` -> (its supervisor, the batcher) for batch tools, made at
        #: the first call (features.batching).
        self._batchers: dict[str, tuple[Supervised, ToolBatcher]] = {}
        #: Batchers replaced by a change of the batching settings: they send what they
        #: hold and take nothing new.
        self._old_batchers: list[ToolBatcher] = []
        self._listeners: list[Listener] = []
        self._env: SupervisorEnv | None = None
        self._started = False
        self._background: list[asyncio.Task[Any]] = []
        self.config: HostConfig = config or HostConfig()
        #: The last change of the registry this host could not apply (it is tried again
        #: with backoff); ``None`` once the registry's state is served in full.
        self.registry_error: RegistryFailure | None = None
        #: This host's own counts (its Prometheus registry is ``metrics.registry()``).
        self.metrics: HostMetrics | None = HostMetrics() if metrics else None
        if self.metrics is not None:
            self.metrics.bind(self)
        #: Settings changed in config.toml that apply only when the host restarts.
        self.restart_pending: list[PendingSetting] = []
        #: Why the last change of config.toml was refused (the host keeps its last good
        #: configuration); ``None`` when the file in force is the one on disk.
        self.config_error: str | None = None
        #: The version of config.toml the host loaded (its inode, mtime and size; None
        #: when there was none), which the watcher does not apply again. An object of
        #: its own until then: the watcher's first look reads the file.
        self.config_file_stamp: object = object()
        self._tracing_choice = tracing
        #: Starts the spans of calls; None when this host does not trace.
        self.tracing: Tracing | None = None
        #: The compositions served as tools (None until one is added or installed).
        self._compositions: Served | None = None
        self._status_choice = status
        #: Answers ``mcphost status`` while the host runs (None when it does not).
        self.control: ControlServer | None = None
        self._flow: Flow | None = None
        #: The exposed names of the plugins' tools, and what they were built from.
        self._names: tuple[list[object], NameMap] | None = None

    # -- lifecycle -----------------------------------------------------------------
    async def __aenter__(self) -> Host:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Discover plugins and learn their tools; workers start on first use."""
        if self._started:
            return
        # Reading the configuration, probing the sandbox (bubblewrap runs a trial jail)
        # and discovering plugins read files and run processes: off the event loop.
        backend, verify = await asyncio.to_thread(self._setup)
        self._env = SupervisorEnv(
            config=self.config,
            backend=backend,
            data_root=self.home.data_dir,
            run_root=self.home.run_dir,
            on_log=self._on_plugin_log,
            on_started=self._on_started,
            on_crashed=self._on_crashed,
            on_replaced=self._on_replaced,
            on_routed=self._routes.clear,
            verify=verify,
            on_notify=self._on_plugin_notify,
            admit=lambda source, hello: features.admit(self, source, hello),
        )
        if self._tracing_choice is not False and self.tracing is None:
            self.tracing = await asyncio.to_thread(self._make_tracing)
        self._started = True
        for source in await asyncio.to_thread(self._discover):
            if source.name in self._supervisors:
                log.warning(
                    "plugin %s found twice (%s and %s); serving the first",
                    source.name,
                    self._supervisors[source.name].source.origin,
                    source.origin,
                )
                continue
            self._supervisors[source.name] = self._supervise(source)
        await self._learn_tools(list(self._supervisors.values()))
        for clash in self.names().clashes:
            log.error("%s (served under its canonical name meanwhile)", clash.message)
        generation = -1
        if self._use_registry and self.config.features.composition:
            generation = await asyncio.to_thread(self._installed_compositions)
        self._background.extend(self._start_background())
        if self._use_registry and self.config.features.composition:
            self._background.append(asyncio.create_task(self._follow_compositions(generation)))
        await self._start_control()

    async def _start_control(self) -> None:
        """Answer ``mcphost status`` (after the start: nothing of it is on the way to the
        first call). A socket that cannot be made is logged; the host runs without it."""
        wanted = self._status_choice
        if wanted is False or (wanted is None and not self.config.features.status):
            return
        from .observe.control import ControlServer

        control = ControlServer(self, self.home.run_dir)
        try:
            await control.start()
        except OSError as exc:
            log.warning("this host does not answer `mcphost status`: %s", exc)
            return
        self.control = control

    def _setup(self) -> tuple[IsolationBackend, Verifier]:
        # Loading verification (cryptography) and the registry link takes a while: it
        # happens here, in the start's thread, with the rest of the setup.
        self.home.ensure()
        if self._config is None:
            from .config_watch import file_stamp

            # Taken before the file is read: a change while it is read is seen later.
            self.config_file_stamp = file_stamp(self.home.config_file)
            self.config = load_config(self.home.config_file)
        # The sandbox probe mostly waits for the processes it runs: it runs on its own
        # thread while this one imports and builds the verifier.
        with ThreadPoolExecutor(1, thread_name_prefix="mcphost-probe") as pool:
            probe = pool.submit(isolation_backend, self.config, self._isolation)
            verify = self._make_verifier()
            if self.metrics is not None:
                verify = self.metrics.counting_verifier(verify)
            backend = probe.result()
        if backend.level != "namespaces":
            log.warning(
                "plugins run with isolation %r only (no namespaces); run `mcphost doctor`",
                backend.name,
            )
        return backend, verify

    def _make_tracing(self) -> Tracing | None:
        choice = self._tracing_choice
        if choice is None and not os.environ.get("OTEL_TRACES_EXPORTER"):
            return None  # the usual case: not even the tracing module is imported
        # The module imports OpenTelemetry only once tracing is asked for.
        from .observe import tracing

        if choice is None:
            return tracing.from_env()
        return tracing.Tracing(None if choice is True else choice)

    def _discover(self) -> list[PluginSource]:
        found = list(self._extra_sources)
        for d in self._plugin_dirs:
            found.extend(discover_directory(d))
        if self._use_registry:
            found.extend(self._registry_sources())
        if self._use_environment:
            found.extend(discover_plugin_path())
            found.extend(discover_environment())
        return found

    def _registry_sources(self) -> list[PluginSource]:
        """Active versions from the registry under this home (none until one exists)."""
        from .registry_link import registry_sources

        return registry_sources(self.home)

    def _make_verifier(self) -> Verifier:
        """The check before every worker start. When it cannot be loaded or built (nor,
        with the registry, the link that stops the workers of a revoked key), the host
        refuses to start: no plugin ever runs unverified."""
        try:
            from .verification import make_verifier

            if self._use_registry:
                from .registry_link import watch_registry  # noqa: F401
            return make_verifier(self.home, self.config)
        except Exception as exc:
            raise VerificationError(
                f"plugin verification cannot be set up ({type(exc).__name__}: {exc}), so "
                "no plugin is started; reinstall mcphost (`pip install --force-reinstall "
                "mcphost`)",
                data={"reason": "verification_unavailable"},
            ) from exc

    def start_workers(self) -> list[asyncio.Task[Any]]:
        """Start the worker of every plugin that has none, in the background, so the
        first call to each finds it running (``mcphost serve`` does this while its
        client's handshake goes on). A start that fails is logged and counted as any
        other; the next call to that plugin tries again. Returns the starts begun."""
        if self._env is None:
            raise PluginError("the host is not started; use `async with Host() as host:`")
        begun: list[asyncio.Task[Any]] = []
        for sup in self._supervisors.values():
            if sup.worker is None and sup.state == "stopped":
                task = self._env.spawn_task(sup.acquire())
                task.add_done_callback(_consume)
                begun.append(task)
        return begun

    def _start_background(self) -> list[asyncio.Task[Any]]:
        tasks = []
        if self._config is None:  # read from config.toml: follow the file
            from .config_watch import watch_config

            tasks.append(asyncio.create_task(watch_config(self)))
        if self._use_registry:
            from .registry_link import watch_registry

            tasks.append(asyncio.create_task(watch_registry(self)))
        return tasks

    # -- compositions ----------------------------------------------------------------
    def _composition_file(self) -> Path:
        return self.home.root / "compositions.sqlite3"

    def _installed_compositions(self) -> int:
        """Load the home's compositions (when any were added); returns their generation.
        The composition package is imported only then."""
        if not self._composition_file().exists():
            return -1
        from .compose.link import read_installed

        generation, comps = read_installed(self.home)
        self._served().replace(comps, self.plugin_catalog())
        return generation

    async def _follow_compositions(self, generation: int) -> None:
        path = self._composition_file()
        while not path.exists():
            await asyncio.sleep(0.25)
        from .compose.link import follow

        await follow(self, self._served(), generation)

    def _served(self) -> Served:
        if self._compositions is None:
            from .compose import Served

            self._compositions = Served()
            if self.metrics is not None:
                self.metrics.compositions = self._compositions.stats
        return self._compositions

    def plugin_catalog(self) -> dict[str, ToolInfo]:
        """The plugins' tools by exposed name, and by ``<plugin>.<tool>`` too (what
        compositions are checked against: a step may name a tool either way)."""
        out: dict[str, ToolInfo] = {}
        for t in self._plugin_tools():
            out[t.name] = t
            out.setdefault(canonical(t.plugin, t.tool), t)
        return out

    def compositions_changed(self) -> None:
        """Tell listeners the tool list changed (compositions were added or removed)."""
        self._emit(HostEvent(kind="tools_changed"))

    def add_composition(self, composition: Composition | str | Path) -> ToolInfo:
        """Serve ``composition`` (a definition, or a TOML/JSON file) as a tool of this
        host, after checking it against the tools served now; returns its tool entry.
        Raises :class:`~mcphost.sdk.errors.CompositionInvalid` listing every problem."""
        self._composition_switch()
        from .compose import check, load_composition
        from .compose.model import invalid

        comp = composition
        if isinstance(comp, str | Path):
            comp = load_composition(comp)
        served = self._served()
        catalog: dict[str, Any] = self.plugin_catalog()
        catalog.update((t.name, t) for t in served.tools() if t.name != comp.name)
        problems = check(comp, catalog)
        if problems:
            raise invalid(problems, f"composition {comp.name}")
        info = served.add(comp, "0", catalog)
        self.compositions_changed()
        return info

    def names_changed(self) -> None:
        """The operator renamed tools (``[plugins.NAME]``): routes are looked up anew and
        listeners told the tool list changed (``message`` "renamed": ``expose`` names the
        plugins' prompts too)."""
        self._routes.clear()
        if self._batchers:  # kept by the name a tool was called by: made anew from now on
            self.batching_changed()
        self._emit(HostEvent(kind="tools_changed", message=RENAMED))

    def _composition_switch(self) -> None:
        if not self.config.features.composition:
            raise CompositionUnavailable(
                "compositions are switched off (features.composition = false in "
                f"{self.home.config_file}); switch them on with `mcphost config set "
                "features.composition true`"
            )

    def reconfigure(self, config: HostConfig) -> None:
        """Run with ``config``'s live settings from now on (a host that reads config.toml
        does this when the file changes); the others wait in :attr:`restart_pending`."""
        from .config_watch import apply_config

        apply_config(self, config)

    async def _learn_tools(self, sups: list[Supervised]) -> None:
        """Start a worker for each plugin whose tools are not known yet (its handshake
        lists them); one that fails is logged and left out, the others go on."""
        unknown = [s for s in sups if s.source.tools is None]
        results = await asyncio.gather(*(s.acquire() for s in unknown), return_exceptions=True)
        for sup, res in zip(unknown, results, strict=True):
            if isinstance(res, BaseException):
                log.error("plugin %s could not start: %s", sup.source.label, res)

    async def close(self) -> None:
        """Stop every worker; nothing the host started outlives this."""
        if self.control is not None:
            control, self.control = self.control, None
            await control.close()
        for t in self._background:
            t.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        batchers = [b for _, b in self._batchers.values()] + self._old_batchers
        for b in batchers:
            b.shut()  # queued calls fail now: nothing new starts a worker while it stops
        await asyncio.gather(
            *(s.stop() for s in self._supervisors.values()), return_exceptions=True
        )
        if self._env is not None:
            for t in list(self._env.tasks):
                t.cancel()
            await asyncio.gather(*self._env.tasks, return_exceptions=True)
            # Workers whose stop was left to a task just cancelled (a start overtaken, a
            # retirement), and the ends of jails handed to threads: all waited for here.
            await self._env.stop_workers()
        await asyncio.gather(*(b.close() for b in batchers), return_exceptions=True)
        self._batchers.clear()
        self._old_batchers.clear()
        # A closed host forgets its stopped supervisors, so it can be started again.
        self._supervisors.clear()
        self._routes.clear()
        self._started = False
        if self.tracing is not None:
            # Spans of the last calls leave now, not at the exporter's next batch.
            await asyncio.to_thread(self.tracing.flush)

    @property
    def flow(self) -> Flow:
        """The flow control of this host's streams (made on first use):
        ``host.flow.snapshot()`` lists the active streams and the admission queue."""
        if self._flow is None:
            from .flow import Flow, StreamMetrics

            metrics = None
            if self.metrics is not None:
                metrics = self.metrics.streams = StreamMetrics()
            self._flow = Flow(lambda: self.config, metrics)
        return self._flow

    def streams(self) -> list[dict[str, Any]]:
        """The active streams, then the admission queue, as :meth:`Flow.snapshot` lists
        them; empty while no stream has run (nothing is made to answer)."""
        return [] if self._flow is None else self._flow.snapshot()

    # -- events --------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every :class:`HostEvent`; returns a function to remove it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _emit(self, event: HostEvent) -> None:
        if self.metrics is not None:
            self.metrics.on_event(event)
        for fn in list(self._listeners):
            try:
                fn(event)
            except Exception:
                log.exception("host event listener failed")

    def _on_plugin_log(self, plugin: str, level: str, message: str, call_id: int) -> None:
        lvl = {"debug": 10, "info": 20, "warning": 30, "error": 40}.get(level, 20)
        if plugin_log.isEnabledFor(lvl):
            # The record names its call, for a structured log (``--log-format json``).
            tool = traceparent = ""
            sup = self._supervisors.get(plugin) or self._leaving.get(plugin)
            if call_id and sup is not None:
                tool, traceparent = sup.call_info(call_id)
            extra = {"plugin": plugin, "tool": tool, "call_id": call_id}
            if traceparent:
                extra["trace_id"] = traceparent[3:35]
            plugin_log.log(lvl, "[%s] %s", plugin, message, extra=extra)
        if self._listeners:
            self._emit(
                HostEvent(kind="log", plugin=plugin, level=level, message=message, call_id=call_id)
            )

    def _on_plugin_notify(self, plugin: str, kind: str, uri: str) -> None:
        if kind != "resource_updated":
            return  # a kind this host does not know (a newer worker's)
        if not features.owns_uri(self, plugin, uri):
            log.warning("plugin %s announced an update of %r, which it does not offer", plugin, uri)
            return
        self._emit(HostEvent(kind="resource_updated", plugin=plugin, message=uri))

    def _on_started(self, plugin: str, version: str, pid: int) -> None:
        self.hooks.hook.mcphost_plugin_started(plugin=plugin, version=version, pid=pid)
        self._emit(HostEvent(kind="plugin_started", plugin=plugin, version=version))

    def _on_crashed(self, plugin: str, version: str, reason: str) -> None:
        self.hooks.hook.mcphost_plugin_crashed(plugin=plugin, version=version, reason=reason)
        self._emit(HostEvent(kind="plugin_crashed", plugin=plugin, version=version, message=reason))

    def _on_replaced(self, plugin: str, version: str, reason: str) -> None:
        self._emit(
            HostEvent(kind="plugin_replaced", plugin=plugin, version=version, message=reason)
        )

    # -- tools ---------------------------------------------------------------------
    def plugins(self) -> list[PluginSource]:
        """The plugin versions currently routed to."""
        return [s.source for s in self._supervisors.values()]

    def tools(self) -> list[ToolInfo]:
        """Every tool of every plugin, by its exposed name (``<plugin>.<tool>`` unless the
        operator's ``[plugins.NAME]`` says otherwise, :mod:`mcphost.host.naming`), and
        every composition served (``<group>.<name>``, with an empty ``plugin``)."""
        out = self._plugin_tools()
        if self._compositions is not None and self.config.features.composition:
            out.extend(self._compositions.tools())
        return sorted(out, key=lambda t: t.name)

    def names(self) -> NameMap:
        """How the plugins' tools are exposed now (rebuilt when a plugin's tools, the
        configuration or the compositions change)."""
        served = self._compositions
        comps: tuple[str, ...] = ()
        if served is not None and self.config.features.composition:
            comps = tuple(served.by_name)
        # Objects compared by identity: a new supervisor, version or worker is a change.
        key: list[object] = [self.config.plugins, comps]
        for s in self._supervisors.values():
            key += (s, s.source, s.route_token)
        cached = self._names
        if cached is not None and _same(cached[0], key):
            return cached[1]
        names = self._build_names(
            {s.name: [t.name for t in s.tools] for s in self._supervisors.values()},
            self.config,
            comps,
        )
        self._names = (key, names)
        return names

    @staticmethod
    def _build_names(
        items: dict[str, list[str]],
        config: HostConfig,
        comps: Iterable[str],
        newcomer: str | None = None,
    ) -> NameMap:
        return build(items, config.plugins, {c: f"composition {c}" for c in comps}, newcomer)

    def check_names(
        self,
        config: HostConfig | None = None,
        source: PluginSource | None = None,
    ) -> NameMap:
        """The names the plugins' tools would have with ``config`` (default: the running
        one) and ``source`` served for its plugin (when its tools are known); raises
        :class:`~mcphost.sdk.errors.NameClash` naming both sides of any clash."""
        items = {s.name: [t.name for t in s.tools] for s in self._supervisors.values()}
        if source is not None and source.tools is not None:
            items[source.name] = [t.name for t in source.tools]
        cfg = config or self.config
        comps: tuple[str, ...] = ()
        if self._compositions is not None and cfg.features.composition:
            comps = tuple(self._compositions.by_name)
        names = self._build_names(items, cfg, comps, source.name if source else None)
        names.check()
        return names

    def _plugin_tools(self) -> list[ToolInfo]:
        out: list[ToolInfo] = []
        names = self.names()
        for sup in self._supervisors.values():
            for spec in sup.tools:
                exposed = names.of.get((sup.name, spec.name))
                if exposed is None:
                    continue  # its name clashes even as <plugin>.<tool>: not served
                out.append(
                    ToolInfo(
                        name=exposed.name,
                        plugin=sup.name,
                        version=sup.source.version,
                        tool=spec.name,
                        description=(
                            spec.description if exposed.description is None else exposed.description
                        ),
                        input_schema=spec.input_schema,
                        output_schema=spec.output_schema,
                        kind=spec.kind,
                        batch=spec.batch,
                    )
                )
        return out

    def _route(self, name: str) -> tuple[Supervised, str]:
        """The supervisor and the tool a call of ``name`` goes to (or the error saying
        what exists)."""
        hit = self._routes.get(name) or self._routed(name)
        return hit[0], hit[1]

    def _routed(self, name: str) -> _Route:
        """Resolve ``name`` and keep the answer (the caller checked the kept one first).
        A name checked before is good while its plugin has the same supervisor and that
        supervisor the same worker, as the tools a supervisor offers come from its
        worker's handshake (or, with no worker, from its source, which changes only with
        a new worker): every change of either forgets the routes (see :data:`_Route`)."""
        if not self._started:
            raise PluginError("the host is not started; use `async with Host() as host:`")
        exposed = self.names().resolve(name)
        if exposed is not None:
            plugin, tool = exposed.plugin, exposed.item
        else:
            plugin, dot, tool = name.partition(".")
            if not dot or not tool:
                raise ToolNotFound(
                    f"no tool is named {name!r}; a tool is called by the name `mcphost "
                    "tools` lists (<plugin>.<tool> unless its plugin is exposed bare or the "
                    "tool renamed, e.g. textkit.upper)",
                    data={"tool": name},
                )
        sup = self._supervisors.get(plugin)
        if sup is None:
            if not self.config.features.composition and self._is_stored_composition(name):
                self._composition_switch()
            known = ", ".join(sorted(self._supervisors)) or "none"
            raise PluginNotFound(
                f"no plugin named {plugin!r} is installed (installed: {known}); install it "
                "with `mcphost plugin install WHEEL`",
                data={"plugin": plugin},
            )
        known_tools = sup.tools
        if known_tools and tool not in {t.name for t in known_tools}:
            raise ToolNotFound(
                f"plugin {plugin} has no tool {tool!r}; it has: "
                + ", ".join(sorted(t.name for t in known_tools)),
                data={"plugin": plugin, "tool": tool},
            )
        stats = None if self.metrics is None else self.metrics.route(name, sup.name)
        if not known_tools:
            return (sup, tool, plugin, None, stats)
        if len(self._routes) > 4096:
            self._routes.clear()
        self._batch_route(name, sup, tool, known_tools)
        # The batcher kept with the route: every change of the batchers forgets the
        # routes (batching_changed), or happens here as the route is kept.
        batched = self._batchers.get(name)
        batcher = batched[1] if batched is not None and batched[0] is sup else None
        route = self._routes[name] = (sup, tool, plugin, batcher, stats)
        return route

    def batching(self) -> dict[str, dict[str, Any]]:
        """Per batch tool called so far: calls, batches, items, why batches left
        (``alone``, ``idle``, ``size``, ``balance``, ``deadline``, ``priority``),
        refusals, calls queued and batches running now, the largest batch the latency
        model allows, and the tool's effective ``max_batch_size`` and
        ``default_priority`` (after its own settings and the operator's)."""
        return {name: b.snapshot() for name, (_, b) in sorted(self._batchers.items())}

    @property
    def batchers(self) -> dict[str, ToolBatcher]:
        """The batcher of every batch tool called so far, by tool name (read them only)."""
        return {name: b for name, (_, b) in self._batchers.items()}

    def batching_changed(self) -> None:
        """The batching settings changed: calls from now on go through batchers made
        with the new ones (or none, with batching off); queued calls leave as before."""
        self._old_batchers = [b for b in self._old_batchers if b.busy]
        self._old_batchers += [b for _, b in self._batchers.values()]
        self._batchers.clear()
        self._routes.clear()

    def _batch_route(self, name: str, sup: Supervised, tool: str, specs: list[ToolSpec]) -> None:
        """Keep a batcher for ``name`` while it is a batch tool and batching is on."""
        spec = next(t for t in specs if t.name == tool)
        known = self._batchers.get(name)
        param = batch_parameter(spec.input_schema) if spec.batch else None
        if param is None or not self.config.features.batching:
            if known is not None:
                del self._batchers[name]
                self._old_batchers.append(known[1])
            return
        resolved = resolve(self.config.batching, name, spec.batching)
        if (
            known is not None
            and known[0] is sup
            and known[1].param == param
            and known[1].made_from == resolved
        ):
            return
        if known is not None:
            self._old_batchers.append(known[1])
        pool = sup if isinstance(sup, WorkerPool) else None

        def dispatch(args: dict[str, Any], timeout: float, key: str | None) -> Awaitable[Any]:
            # A keyed batch goes to its key's replica while that one's load allows. With
            # a worker running, its call is awaited as it is (no coroutine around it).
            worker = pool.worker_for(key) if pool is not None and key is not None else sup.worker
            if worker is None or not worker.alive:
                return acquired(args, timeout)
            return worker.call(tool, args, timeout=timeout, items=True)

        async def acquired(args: dict[str, Any], timeout: float) -> Any:
            worker = await sup.acquire()
            return await worker.call(tool, args, timeout=timeout, items=True)

        batcher = ToolBatcher(
            name,
            param,
            dispatch,
            resolved.former,
            target_latency=resolved.target_latency,
            max_in_flight=resolved.max_in_flight,
            default_priority=resolved.default_priority,
            large_item_bytes=resolved.large_item_bytes,
            key=key_function(name, resolved.batch_key),
        )
        batcher.made_from = resolved
        self._batchers[name] = (sup, batcher)

    def _is_stored_composition(self, name: str) -> bool:
        if self._compositions is not None and name in self._compositions.by_name:
            return True
        if not self._composition_file().exists():
            return False
        from .compose.link import read_installed

        return any(c.name == name for c, _, _ in read_installed(self.home)[1])

    def _authorize(self, name: str, plugin: str, args: dict[str, Any]) -> None:
        verdict = self.hooks.hook.mcphost_authorize_call(tool=name, plugin=plugin, arguments=args)
        if verdict is False or isinstance(verdict, str):
            why = verdict if isinstance(verdict, str) else "refused by the host's policy"
            raise PluginError(f"call to {name} was not authorized: {why}", data={"tool": name})

    async def call(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_log: CallLogCallback | None = None,
        traceparent: str = "",
        priority: int | None = None,
    ) -> Any:
        """Call a tool by its exposed name (:meth:`tools`; see
        :mod:`mcphost.host.naming`) or by ``<plugin>.<tool>``, with ``args``, and return
        its result as plain data.

        Cancelling the awaiting task cancels the call in the worker. Errors are
        :class:`~mcphost.sdk.errors.MCPHostError` subclasses with stable codes.
        ``on_progress`` and ``on_log`` (level, message) receive this call's progress
        and log lines, and no other call's. ``traceparent``: the W3C trace context the
        worker's spans nest under, for a caller that made the call's span itself (a
        tracing host makes one when it is not given). ``priority``: the call's level in
        its batch tool's queue (0 the highest; ``batching.default_priority`` if not
        given); calls to other tools go at once.
        """
        if self.asker is not None and current_asker.get() is None:
            # No MCP client made this call: the app's own handlers answer its asks.
            token = current_asker.set(self.asker)
            try:
                return await self.call(
                    name,
                    args,
                    timeout=timeout,
                    on_progress=on_progress,
                    on_log=on_log,
                    traceparent=traceparent,
                    priority=priority,
                )
            finally:
                current_asker.reset(token)
        served = self._compositions
        if served is not None and name in served.by_name and self.config.features.composition:
            # A composition: each of its steps comes back here as an ordinary call.
            return await served.call(
                self,
                name,
                args,
                timeout=None if timeout is None else _checked_timeout(timeout),
                call_timeout=self.config.call_timeout,
                on_progress=on_progress,
                on_log=on_log,
            )
        if self.tracing is not None and not traceparent:
            return await self.tracing.call(
                self,
                name,
                args,
                timeout=timeout,
                on_progress=on_progress,
                on_log=on_log,
                priority=priority,
            )
        if args is None:
            args = {}
        elif type(args) is not dict and not isinstance(args, dict):
            raise InvalidArguments(f"{name}: arguments must be a JSON object (a dict)")
        if priority is not None:
            from .flow.controller import checked_priority

            priority = checked_priority(priority)
        # The route kept for the name (see _Route).
        hit = self._routes.get(name)
        if hit is None:
            hit = self._routed(name)
        sup, tool, _, batcher, stats = hit
        timeout = self.config.call_timeout if timeout is None else _checked_timeout(timeout)
        if self.hooks.generation != self._hooks_seen:
            self._see_hooks()
        if self._call_hooks:
            return await self._hooked_call(
                name, sup, tool, args, timeout, on_progress, on_log, traceparent, priority, stats
            )
        # The path of most calls: no hook to run, so nothing but the call and its count
        # (a batch tool's batcher counts its calls itself, a batch at once).
        if batcher is not None:
            return await batcher.call(args, timeout, priority, stats)
        sent = self._send(
            name, sup, tool, args, timeout, on_progress, on_log, traceparent, priority
        )
        if stats is None:
            return await sent
        # Observed here, at the edge: a few adds per call.
        m0 = stats.begin()
        try:
            result = await sent
        except BaseException as exc:
            stats.failed(m0, exc)
            raise
        stats.done(m0)
        return result

    def _see_hooks(self) -> None:
        """Note which call hooks have implementations (after a (un)registration)."""
        hook = self.hooks.hook
        self._hooks_seen = self.hooks.generation
        self._call_hooks = bool(
            hook.mcphost_authorize_call.get_hookimpls()
            or hook.mcphost_before_call.get_hookimpls()
            or hook.mcphost_after_call.get_hookimpls()
        )

    async def _hooked_call(
        self,
        name: str,
        sup: Supervised,
        tool: str,
        args: dict[str, Any],
        timeout: float,
        on_progress: ProgressCallback | None,
        on_log: CallLogCallback | None,
        traceparent: str,
        priority: int | None,
        stats_or_none: RouteStats | None,
    ) -> Any:
        """:meth:`call` with the app's call hooks around it (``stats_or_none``: the
        route's call counts)."""
        hook = self.hooks.hook
        after = hook.mcphost_after_call
        # A hook with no implementation registered is not called at all: pluggy's call
        # machinery costs more than the rest of the host's side of a call.
        if hook.mcphost_authorize_call.get_hookimpls():
            self._authorize(name, sup.name, args)
        if hook.mcphost_before_call.get_hookimpls():
            hook.mcphost_before_call(tool=name, plugin=sup.name, arguments=args)
        m0 = 0.0 if stats_or_none is None else stats_or_none.begin()
        t0 = time.perf_counter()
        error: BaseException | None = None
        try:
            return await self._send(
                name, sup, tool, args, timeout, on_progress, on_log, traceparent, priority
            )
        except BaseException as exc:
            error = exc
            raise
        finally:
            if stats_or_none is not None:
                if error is None:
                    stats_or_none.done(m0)
                else:
                    stats_or_none.failed(m0, error)
            if after.get_hookimpls():
                outcome = "ok" if error is None else getattr(error, "code", "cancelled")
                after(
                    tool=name,
                    plugin=sup.name,
                    arguments=args,
                    duration=time.perf_counter() - t0,
                    outcome=outcome,
                    error=error,
                )

    def _send(
        self,
        name: str,
        sup: Supervised,
        tool: str,
        args: dict[str, Any],
        timeout: float,
        on_progress: ProgressCallback | None,
        on_log: CallLogCallback | None,
        traceparent: str,
        priority: int | None,
    ) -> Awaitable[Any]:
        """The call on its way: through the tool's batcher, or to a worker."""
        if self._batchers:
            routed = self._batchers.get(name)
            if routed is not None and routed[0] is sup:
                return routed[1].call(args, timeout, priority)
        worker = sup.worker
        if worker is None or not worker.alive:
            return self._acquired_call(sup, tool, args, timeout, on_progress, on_log, traceparent)
        return worker.call(
            tool,
            args,
            timeout=timeout,
            on_progress=on_progress,
            on_log=on_log,
            traceparent=traceparent,
        )

    async def _acquired_call(
        self,
        sup: Supervised,
        tool: str,
        args: dict[str, Any],
        timeout: float,
        on_progress: ProgressCallback | None,
        on_log: CallLogCallback | None,
        traceparent: str,
    ) -> Any:
        worker = await sup.acquire()
        return await worker.call(
            tool,
            args,
            timeout=timeout,
            on_progress=on_progress,
            on_log=on_log,
            traceparent=traceparent,
        )

    async def batch(
        self,
        name: str,
        items: Iterable[Any],
        *,
        args: dict[str, Any] | None = None,
        priority: int | None = None,
        timeout: float | None = None,
        reduce: str | None = None,
        max_concurrency: int = 256,
    ) -> BatchOutcome:
        """Run ``name`` once per item, concurrently; every item's outcome in input order.

        For a batch tool an item is one element of its list parameter (``args`` holds
        the other arguments) and items share batch calls; for another tool an item is
        the arguments of one call (merged over ``args``). A failed item does not fail
        the others. ``reduce`` aggregates the successful results: ``sum``, ``mean``,
        ``concat``, ``merge``, ``count``, or a tool (``<plugin>.<tool>``) called with
        their list. At most ``max_concurrency`` items are in flight at once.
        """
        from .batch.explicit import run_batch

        return await run_batch(
            self,
            name,
            items,
            args=args,
            priority=priority,
            timeout=timeout,
            reduce=reduce,
            max_concurrency=max_concurrency,
        )

    async def stream(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        window: int | None = None,
        on_progress: ProgressCallback | None = None,
        on_log: CallLogCallback | None = None,
        traceparent: str = "",
        priority: int | None = None,
        limits: dict[str, Any] | None = None,
    ) -> AsyncIterator[Any]:
        """Yield the items of a streaming tool, under flow control (docs/streaming.md):
        admission by ``priority`` (0 to 100, 0 admitted first, as for calls; default
        the tool's ``streaming.tool_priority`` or ``default_priority``), credit in items
        and bytes,
        watermarks, and the ``[streaming]`` limits, which ``limits`` may lower (e.g.
        ``{"max_items": 100}``).

        Leaving the loop early (break, cancel) closes the tool's generator in the worker.
        An error that ends a stream carries ``data["delivered"]``, the items yielded.
        ``traceparent`` as for :meth:`call`.
        """
        if self.asker is not None and current_asker.get() is None:
            # No MCP client: the app's handlers answer the stream's asks. The variable is
            # set in the consumer's context while the stream runs.
            token = current_asker.set(self.asker)
            try:
                inner: Any = self.stream(
                    name,
                    args,
                    timeout=timeout,
                    window=window,
                    on_progress=on_progress,
                    on_log=on_log,
                    traceparent=traceparent,
                    priority=priority,
                    limits=limits,
                )
                async with contextlib.aclosing(inner) as items:
                    async for item in items:
                        yield item
            finally:
                with contextlib.suppress(ValueError):  # closed from another context
                    current_asker.reset(token)
            return
        if self.tracing is not None and not traceparent:
            async for item in self.tracing.stream(
                self,
                name,
                args,
                timeout=timeout,
                window=window,
                on_progress=on_progress,
                on_log=on_log,
                priority=priority,
                limits=limits,
            ):
                yield item
            return
        if not self.config.features.streaming:
            raise ConfigError("streaming is switched off (features.streaming = false)")
        args = {} if args is None else args
        if timeout is not None:
            timeout = _checked_timeout(timeout)
        if window is not None and (
            isinstance(window, bool) or not isinstance(window, int) or window < 1
        ):
            raise InvalidArguments(
                f"window must be a whole number of items, at least 1, got {window!r}; leave "
                "it out for the configured stream_window"
            )
        sup, tool = self._route(name)
        self._authorize(name, sup.name, args)
        self.hooks.hook.mcphost_before_call(tool=name, plugin=sup.name, arguments=args)
        t0 = time.perf_counter()
        error: BaseException | None = None
        try:
            # aclosing: a consumer that leaves cancels the producer now, not when the
            # stream's generators are collected.
            async with contextlib.aclosing(
                self.flow.stream(
                    name,
                    sup.name,
                    sup.acquire,
                    tool,
                    args,
                    priority=priority,
                    limits=limits,
                    window=window,
                    timeout=timeout,
                    on_progress=on_progress,
                    on_log=on_log,
                    traceparent=traceparent,
                )
            ) as items:
                async for item in items:
                    yield item
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.hooks.hook.mcphost_after_call(
                tool=name,
                plugin=sup.name,
                arguments=args,
                duration=time.perf_counter() - t0,
                outcome="ok" if error is None else getattr(error, "code", "cancelled"),
                error=error,
            )

    # -- resources, prompts, completions (host/features.py) -------------------------
    # Each answers in MCP's shapes. Listing starts the worker of every plugin whose
    # worker is not running (its handshake declares what it offers).
    async def list_resources(self) -> list[dict[str, Any]]:
        """Every plugin's resources: ``{"uri", "name", "description", "mimeType"}``."""
        return (await features.known_index(self)).resources()

    async def list_resource_templates(self) -> list[dict[str, Any]]:
        """Every plugin's resource templates: ``{"uriTemplate", "name", ...}``."""
        return (await features.known_index(self)).templates()

    async def read_resource(self, uri: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Read ``uri`` from the plugin that offers it: ``{"contents": [...]}``;
        :class:`~mcphost.sdk.errors.ResourceNotFound` when none does."""
        return await features.read_resource(self, uri, timeout)

    async def list_prompts(self) -> list[dict[str, Any]]:
        """Every plugin's prompts, by exposed name (``<plugin>.<prompt>`` unless the
        operator's ``[plugins.NAME] expose`` says otherwise), with their arguments."""
        return (await features.known_index(self)).prompts()

    async def get_prompt(
        self, name: str, arguments: dict[str, str] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Fill in the prompt exposed as ``name`` (or ``<plugin>.<prompt>``):
        ``{"description", "messages": [...]}``."""
        return await features.get_prompt(self, name, arguments, timeout)

    async def complete(
        self,
        ref: dict[str, Any],
        argument: dict[str, Any],
        context: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Suggest values for ``argument`` (``{"name", "value"}``) of the prompt or
        resource template ``ref`` names (MCP's ``ref/prompt`` / ``ref/resource``):
        ``{"completion": {"values", "total", "hasMore"}}``."""
        return await features.complete(self, ref, argument, context, timeout)

    # -- operations ----------------------------------------------------------------
    def stats(self) -> list[dict[str, Any]]:
        """Per plugin: state, version, pid, memory (``memory_mb``, counted as
        ``memory_source`` says: ``cgroup``, ``pss`` or ``rss``), CPU, calls, restarts."""
        return [s.stats() for s in self._supervisors.values()]

    def reset_plugin(self, name: str) -> None:
        """Clear a plugin's failed state so the next call starts it again."""
        sup = self._supervisors.get(name)
        if sup is None:
            raise PluginNotFound(f"no plugin named {name!r}")
        sup.reset()

    def _supervise(self, source: PluginSource) -> Supervised:
        assert self._env is not None, "host not started"
        settings = self.config.plugins.get(source.name)
        if settings is not None and settings.placement == "ray":
            from .cluster import make_cluster_supervisor  # Ray only for plugins placed on it

            return make_cluster_supervisor(source, self._env, settings, self.home)
        return self._count_queued(
            make_supervisor(source, self._env, settings.policy() if settings else 1)
        )

    def _count_queued(self, sup: Supervised) -> Supervised:
        """Let a pool see the calls queued for its batch tools (a load it scales on)."""
        if isinstance(sup, WorkerPool):
            sup.queued = lambda: sum(b.queued for s, b in self._batchers.values() if s is sup)
        return sup

    def plugins_changed(self) -> None:
        """The ``[plugins.NAME]`` settings changed: each plugin's workers follow them
        from now on (a pool takes its new bounds at its next reading of the load; a
        single worker that may now scale becomes the first replica of a pool). A plugin
        placed on a cluster keeps its workers until the host restarts."""
        if self._env is None:
            return
        for name, sup in list(self._supervisors.items()):
            settings = self.config.plugins.get(name)
            # placement is not live: the running configuration's is the one each
            # supervisor was made with.
            if settings is not None and settings.placement != "local":
                log.warning(
                    "plugin %s runs on a cluster: its replica settings apply when the "
                    "host restarts (restart mcphost serve, or the embedding app's Host)",
                    name,
                )
                continue
            policy = settings.policy() if settings else PluginSettings().policy()
            now = reconfigure(sup, policy)
            if now is not sup:
                self._supervisors[name] = self._count_queued(now)
                self._routes.clear()

    async def activate(self, source: PluginSource) -> str | None:
        """Serve ``source`` for its plugin: add it, or hot-swap the running version.

        Returns the version it replaced (None when the plugin is new). If the new
        version cannot start, nothing changes and the error says why.
        """
        assert self._env is not None, "host not started"
        # A version whose tools would take a name another plugin (or a composition) is
        # exposed under is refused before anything starts, naming both.
        self.check_names(source=source)
        sup = self._supervisors.get(source.name)
        if sup is None:
            sup = self._supervise(source)
            if source.tools is None:
                await sup.acquire()
                try:  # its tools are known now: their names must not clash either
                    self.check_names(source=msgspec.structs.replace(source, tools=sup.tools))
                except BaseException:
                    await sup.stop()
                    raise
            self._supervisors[source.name] = sup
            self._routes.clear()
            self._emit(HostEvent(kind="tools_changed", plugin=source.name, version=source.version))
            return None
        old = sup.source.version
        old_tools = {t.name for t in sup.tools}
        t0 = time.perf_counter()
        try:
            await sup.swap(source, self.config.drain_timeout)
        except BaseException:
            if self.metrics is not None:
                self.metrics.swapped(source.name, time.perf_counter() - t0, ok=False)
            raise
        if self.metrics is not None:
            self.metrics.swapped(source.name, time.perf_counter() - t0, ok=True)
        self.hooks.hook.mcphost_plugin_swapped(
            plugin=source.name, old_version=old, new_version=source.version
        )
        self._emit(
            HostEvent(
                kind="plugin_swapped", plugin=source.name, version=source.version, message=old
            )
        )
        if {t.name for t in sup.tools} != old_tools or old != source.version:
            self._emit(HostEvent(kind="tools_changed", plugin=source.name, version=source.version))
        return old

    async def deactivate(self, name: str) -> None:
        """Stop serving a plugin (its calls in flight are drained first)."""
        sup = self._supervisors.pop(name, None)
        if sup is None:
            return
        self._routes.clear()
        # Routed no more, but its calls still log while they drain: keep it findable.
        self._leaving[name] = sup
        try:
            await sup.drain(self.config.drain_timeout)
            await sup.stop()
        finally:
            if self._leaving.get(name) is sup:
                del self._leaving[name]
        self._emit(HostEvent(kind="tools_changed", plugin=name))


def _checked_timeout(timeout: float) -> float:
    """A caller's timeout: a finite number of seconds above 0 (None, left out, means the
    configuration's ``call_timeout`` for a call and no deadline for a stream)."""
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not (0 < timeout < math.inf)
    ):
        raise InvalidArguments(
            f"timeout must be a number of seconds above 0, got {timeout!r}; leave it out "
            "for the configured call_timeout"
        )
    return float(timeout)


def _same(a: list[object], b: list[object]) -> bool:
    """Whether two lists hold the same objects (the configuration's table compared by
    value: a reload makes a new one even when nothing changed)."""
    if len(a) != len(b) or a[0] != b[0] or a[1] != b[1]:
        return False
    return all(x is y for x, y in zip(a[2:], b[2:], strict=True))


def _consume(task: asyncio.Task[Any]) -> None:
    """Read a background start's outcome: its failure was logged where it happened."""
    if not task.cancelled():
        task.exception()
