"""Plugins' resources and prompts as the host offers them: names, routing, clashes.

Prompts are named as tools are, by the operator's ``[plugins.NAME] expose``
(:mod:`.naming`): ``<plugin>.<prompt>`` by default, the author's own name when the
plugin is exposed bare; ``<plugin>.<prompt>`` always resolves too. Prompts are known
from workers' handshakes, so a clash is found there: a worker whose prompts would take
a name another running plugin's prompt has is refused at its handshake (:func:`admit`),
which refuses the install or swap that started it, naming both. A clash that a change
of ``expose`` makes among running plugins is not refused (the workers already run): the
plugin first in name order keeps the name, the other's prompt is served as
``<plugin>.<prompt>`` and the clash is logged.

Resource URIs are exposed as the plugins declare them, so two plugins must never claim
the same one: a worker whose resources clash with those of another plugin's running
worker is refused at its handshake (:func:`uri_clash`), which
refuses the install or swap that started it, naming both plugins. A URI is routed to
the plugin that declares it exactly, else to the one whose template matches it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from mcphost.sandbox.protocol import Hello
from mcphost.sdk.errors import (
    HandshakeRefused,
    InvalidArguments,
    PluginNotFound,
    ResourceNotFound,
    ToolNotFound,
)
from mcphost.sdk.features import UriTemplate, contents_to_mcp, string_arguments

from .naming import NameMap, build

if TYPE_CHECKING:
    from .config import PluginSettings
    from .host import Host
    from .pool import Supervised
    from .sources import PluginSource

log = logging.getLogger("mcphost.host")

__all__ = ["FeatureIndex", "uri_clash"]

_VARIABLE = re.compile(r"\{[^}]*\}")


def _shape(template: str) -> str:
    """A template with its variables' names left out: two templates of one shape
    match the same URIs."""
    return _VARIABLE.sub("{}", template)


def uri_clash(plugin: str, hello: Hello, others: Iterable[Hello]) -> str | None:
    """Why ``plugin`` 's resources may not be served beside the ``others`` (other
    plugins' handshakes), or None: the same URI, templates of the same shape, or a URI
    one of the other plugin's templates matches (either way round)."""
    mine = [r.uri for r in hello.resources]
    my_templates = [t.uri_template for t in hello.templates]
    for other in others:
        if other.plugin == plugin:
            continue
        theirs = {r.uri for r in other.resources}
        shapes = {_shape(t.uri_template): t.uri_template for t in other.templates}
        clash = next((u for u in mine if u in theirs), None)
        if clash is None:
            clash = next((t for t in my_templates if _shape(t) in shapes), None)
        if clash is None:
            their_templates = [UriTemplate(t) for t in shapes.values()]
            clash = next(
                (u for u in mine if any(t.match(u) is not None for t in their_templates)), None
            )
        if clash is None:
            templates = [UriTemplate(t) for t in my_templates]
            clash = next(
                (u for u in theirs if any(t.match(u) is not None for t in templates)), None
            )
        if clash is not None:
            return (
                f"its resource {clash!r} clashes with a resource of plugin {other.plugin!r}; "
                "resource URIs of different plugins must not overlap: give one plugin's "
                "URIs a scheme or path of its own, or remove the other plugin"
            )
    return None


class FeatureIndex:
    """The resources, templates and prompts of the plugins whose handshakes are known."""

    def __init__(
        self,
        hellos: list[Hello],
        versions: dict[str, str],
        settings: Mapping[str, PluginSettings] | None = None,
    ) -> None:
        self.hellos = hellos
        self.versions = versions
        #: The prompts' exposed names, under the operator's ``[plugins.NAME]`` settings.
        self.prompt_names: NameMap = build(
            {h.plugin: [p.name for p in h.prompts] for h in hellos}, settings or {}, kind="prompt"
        )
        self._templates = [
            (h.plugin, UriTemplate(t.uri_template)) for h in hellos for t in h.templates
        ]
        self._static = {r.uri: h.plugin for h in hellos for r in h.resources}

    def _meta(self, plugin: str) -> dict[str, Any]:
        return {"mcphost/plugin": plugin, "mcphost/version": self.versions.get(plugin, "")}

    def _listed(
        self, plugin: str, first: tuple[str, str], name: str, description: str, mime: str
    ) -> dict[str, Any]:
        """One entry of the resource or template list: ``first`` its URI field."""
        entry: dict[str, Any] = {first[0]: first[1], "name": name}
        if description:
            entry["description"] = description
        if mime:
            entry["mimeType"] = mime
        entry["_meta"] = self._meta(plugin)
        return entry

    def resources(self) -> list[dict[str, Any]]:
        out = [
            self._listed(h.plugin, ("uri", r.uri), r.name, r.description, r.mime_type)
            for h in self.hellos
            for r in h.resources
        ]
        return sorted(out, key=lambda e: e["uri"])

    def templates(self) -> list[dict[str, Any]]:
        out = [
            self._listed(
                h.plugin, ("uriTemplate", t.uri_template), t.name, t.description, t.mime_type
            )
            for h in self.hellos
            for t in h.templates
        ]
        return sorted(out, key=lambda e: e["uriTemplate"])

    def prompts(self) -> list[dict[str, Any]]:
        out = []
        for h in self.hellos:
            for p in h.prompts:
                exposed = self.prompt_names.of.get((h.plugin, p.name))
                if exposed is None:
                    continue  # its name clashes even as <plugin>.<prompt>: not served
                entry: dict[str, Any] = {"name": exposed.name}
                if p.description:
                    entry["description"] = p.description
                entry["arguments"] = [
                    {
                        "name": a.name,
                        **({"description": a.description} if a.description else {}),
                        "required": a.required,
                    }
                    for a in p.arguments
                ]
                entry["_meta"] = self._meta(h.plugin)
                out.append(entry)
        return sorted(out, key=lambda e: e["name"])

    def resource_owner(self, uri: str) -> str | None:
        """The plugin serving ``uri``: an exact resource first, then a template."""
        owner = self._static.get(uri)
        if owner is not None:
            return owner
        return next((p for p, t in self._templates if t.match(uri) is not None), None)

    def template_owner(self, template: str) -> str | None:
        return next((p for p, t in self._templates if t.template == template), None)

    def resolve_prompt(self, name: Any) -> tuple[str, str] | None:
        """(plugin, prompt) of the prompt a client calls ``name``: its exposed name, or
        ``<plugin>.<prompt>``; None when no served prompt has that name."""
        exposed = self.prompt_names.resolve(name) if isinstance(name, str) else None
        return None if exposed is None else (exposed.plugin, exposed.item)


# -- what the Host does with them (its methods call these) -------------------------
async def known_index(host: Host) -> FeatureIndex:
    """The index of every served plugin's handshake; a plugin whose worker does not
    run is started first (as its first call would), one that cannot start is logged
    and left out."""
    sups = list(host._supervisors.values())

    async def hello_of(sup: Supervised) -> Hello:
        w = sup.worker
        if w is None or not w.alive or w.hello is None:
            w = await sup.acquire()
        assert w.hello is not None
        return w.hello

    results = await asyncio.gather(*(hello_of(s) for s in sups), return_exceptions=True)
    hellos: list[Hello] = []
    for sup, res in zip(sups, results, strict=True):
        if isinstance(res, BaseException):
            if isinstance(res, asyncio.CancelledError):
                raise res
            log.error("plugin %s could not start: %s", sup.source.label, res)
        else:
            hellos.append(res)
    index = FeatureIndex(hellos, {s.name: s.source.version for s in sups}, host.config.plugins)
    for clash in index.prompt_names.clashes:
        if clash.message not in _logged_clashes:
            _logged_clashes.add(clash.message)
            log.warning(
                "%s; until then it is served as %s.%s", clash.message, clash.plugin, clash.item
            )
    return index


#: Prompt clashes logged already (each is logged once per process, not at every list).
_logged_clashes: set[str] = set()


def running_hellos(host: Host, but: str = "") -> list[Hello]:
    """The handshakes of the running workers of every plugin but ``but``."""
    out = []
    for sup in host._supervisors.values():
        w = sup.worker
        if sup.name != but and w is not None and w.alive and w.hello is not None:
            out.append(w.hello)
    return out


def admit(host: Host, source: PluginSource, hello: Hello) -> None:
    """Refuse a worker whose resource URIs, or whose prompts' exposed names, clash with
    another running plugin's (naming both)."""
    others = running_hellos(host, but=source.name)
    problem = uri_clash(source.name, hello, others)
    if problem is None and hello.prompts:
        names = build(
            {h.plugin: [p.name for p in h.prompts] for h in [*others, hello]},
            host.config.plugins,
            newcomer=hello.plugin,
            kind="prompt",
        )
        mine = [c.message for c in names.clashes if c.plugin == hello.plugin]
        problem = "; ".join(mine) or None
    if problem is not None:
        raise HandshakeRefused(
            f"worker for {source.label} was refused: {problem}",
            data={"plugin": source.name, "version": source.version, "problem": problem},
        )


def owns_uri(host: Host, plugin: str, uri: str) -> bool:
    """Whether ``plugin`` 's running worker declares ``uri`` (or a template matching it)."""
    sup = host._supervisors.get(plugin)
    w = sup.worker if sup is not None else None
    if w is None or w.hello is None:
        return False
    return FeatureIndex([w.hello], {}).resource_owner(uri) == plugin


async def feature_call(
    host: Host, plugin: str, kind: str, target: str, args: dict[str, Any], timeout: float | None
) -> Any:
    """Run a resource read, prompt or completion in ``plugin`` 's worker."""
    sup = host._supervisors.get(plugin)
    if sup is None:
        raise PluginNotFound(f"no plugin named {plugin!r} is installed", data={"plugin": plugin})
    worker = sup.worker
    if worker is None or not worker.alive:
        worker = await sup.acquire()
    return await worker.call(
        target,
        args,
        timeout=host.config.call_timeout if timeout is None else timeout,
        kind=kind,
    )


async def read_resource(host: Host, uri: str, timeout: float | None) -> dict[str, Any]:
    if not isinstance(uri, str) or not uri:
        raise InvalidArguments("resources/read needs a uri (a string)")
    index = await known_index(host)
    plugin = index.resource_owner(uri)
    if plugin is None:
        raise ResourceNotFound(
            f"no plugin offers resource {uri!r}; resources/list and "
            "resources/templates/list show what this host serves",
            data={"uri": uri},
        )
    result: dict[str, Any] = await feature_call(host, plugin, "resource", uri, {}, timeout)
    return contents_to_mcp(result)  # blobs cross the worker's channel as bytes


async def get_prompt(
    host: Host, name: str, arguments: dict[str, Any] | None, timeout: float | None
) -> dict[str, Any]:
    index = await known_index(host)
    parts = index.resolve_prompt(name)
    if parts is None:
        raise ToolNotFound(
            f"unknown prompt {name!r}: prompts/list shows the prompts this host serves "
            "(<plugin>.<prompt> unless its plugin is exposed bare)",
            data={"prompt": name},
        )
    args = string_arguments(arguments, f"prompt {name}")
    result: dict[str, Any] = await feature_call(host, parts[0], "prompt", parts[1], args, timeout)
    return result


async def complete(
    host: Host,
    ref: dict[str, Any],
    argument: dict[str, Any],
    context: dict[str, Any] | None,
    timeout: float | None,
) -> dict[str, Any]:
    if not isinstance(ref, dict) or not isinstance(argument, dict):
        raise InvalidArguments("completion/complete needs ref and argument objects")
    kind = ref.get("type")
    index = await known_index(host)
    if kind == "ref/prompt":
        parts = index.resolve_prompt(ref.get("name"))
        if parts is None:
            raise ToolNotFound(f"unknown prompt {ref.get('name')!r}", data={"ref": ref})
        plugin, local = parts[0], {"type": kind, "name": parts[1]}
    elif kind == "ref/resource":
        uri = str(ref.get("uri", ""))
        owner = index.template_owner(uri) or index.resource_owner(uri)
        if owner is None:
            raise ResourceNotFound(f"no plugin offers resource template {uri!r}", data={"ref": ref})
        plugin, local = owner, {"type": kind, "uri": uri}
    else:
        raise InvalidArguments(
            f"completion/complete: ref.type {kind!r} must be 'ref/prompt' or 'ref/resource'"
        )
    args = {"ref": local, "argument": argument, "context": context or {}}
    result: dict[str, Any] = await feature_call(host, plugin, "complete", "", args, timeout)
    return result
