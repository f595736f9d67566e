"""``mcphost tools``, ``call``, ``doctor``: the everyday commands."""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any

import click
import msgspec

from mcphost.sandbox.jail import available_backends, choose_backend
from mcphost.sdk.errors import ConfigError, MCPHostError, PluginNotFound
from mcphost.sdk.text import printable

from ..config import HostConfig, load_config
from ..home import Home
from ..host import Host
from .homes import pass_serving_home
from .main import echo_json, main, pass_home, run_async


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the tools as JSON.")
@pass_serving_home
def tools(home: Home, as_json: bool) -> None:
    """List every tool of every installed plugin."""

    async def go() -> list[Any]:
        async with Host(home, status=False) as host:
            return host.tools()

    found = run_async(go())
    if as_json:
        echo_json(msgspec.to_builtins(found))
        return
    if not found:
        click.echo(
            f"no tools: no plugin is installed in the home {home.root}, in "
            "$MCPHOST_PLUGIN_PATH or in mcphost's environment; install one with "
            "`mcphost plugin install WHEEL`"
        )
        return
    width = max(len(t.name) for t in found)
    for t in found:
        # A description is the plugin's text: no control character reaches the terminal.
        first = printable(t.description.splitlines()[0]) if t.description else ""
        kind = " (stream)" if t.kind == "stream" else " (composition)" if not t.plugin else ""
        click.echo(f"{printable(t.name):<{width}}  {first}{kind}")


@main.command()
@click.argument("tool")
@click.argument("arguments", required=False, default="{}")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds (above 0) before the call is cancelled (default: call_timeout).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='On failure print {"error": {"code", "message", "data"}} on stdout.',
)
@click.option(
    "--batch",
    "batch_file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Run TOOL once per line of this JSON-lines file ('-': stdin) and print one JSON "
    "line per item, in order; ARGUMENTS then holds the arguments every item shares.",
)
@click.option(
    "--reduce",
    help="With --batch: also print the aggregate of the successful results (sum, mean, "
    "concat, merge, count, or a tool that takes the list of results).",
)
@click.option(
    "--priority",
    type=click.IntRange(min=0),
    help="Priority level of the calls in a batch tool's queue (0 is the highest).",
)
@pass_serving_home
def call(
    home: Home,
    tool: str,
    arguments: str,
    timeout: float | None,
    as_json: bool,
    batch_file: str | None,
    reduce: str | None,
    priority: int | None,
) -> None:
    """Call TOOL (<plugin>.<tool>) with ARGUMENTS as a JSON object; print the JSON result.

    A streaming tool prints one JSON line per item. With --batch, each line of the file
    is one item: for a batch tool, one element of its list parameter; for another
    tool, an object of arguments.
    """
    if reduce is not None and batch_file is None:
        raise click.UsageError("--reduce needs --batch FILE")
    try:
        args = json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise click.UsageError(
            f'ARGUMENTS is not valid JSON ({exc}); pass an object like \'{{"text": "hi"}}\''
        ) from None
    if not isinstance(args, dict):
        raise click.UsageError('ARGUMENTS must be a JSON object like \'{"text": "hi"}\'')

    if batch_file is not None:
        items = _batch_items(batch_file)

        async def go_batch() -> None:
            async with Host(home) as host:
                outcome = await host.batch(
                    tool, items, args=args, priority=priority, timeout=timeout, reduce=reduce
                )
            for item in outcome.items:
                click.echo(msgspec.json.encode(item).decode())
            if reduce is not None:
                click.echo(json.dumps({"aggregate": outcome.aggregate, "reduce": reduce}))
            if outcome.failed:
                click.echo(f"{outcome.failed} of {len(outcome.items)} items failed", err=True)
                sys.exit(1)

        try:
            run_async(go_batch())
        except MCPHostError as exc:
            if not as_json:
                raise
            click.echo(json.dumps({"error": exc.to_dict()}, indent=2))
            sys.exit(exc.exit_code)
        return

    async def go() -> None:
        async with Host(home, status=False) as host:
            info = {t.name: t for t in host.tools()}.get(tool)
            try:
                if info is not None and info.kind == "stream":
                    async for item in host.stream(tool, args, timeout=timeout):
                        click.echo(json.dumps(item))
                else:
                    result = await host.call(tool, args, timeout=timeout, priority=priority)
                    click.echo(json.dumps(result, indent=2))
            except PluginNotFound as exc:
                # "Nothing installed" names where it looked: a wrong home is the usual cause.
                raise PluginNotFound(f"{exc.message} (home: {home.root})", data=exc.data) from None

    try:
        run_async(go())
    except MCPHostError as exc:
        if not as_json:
            raise  # the command group prints `error [code]: message`
        click.echo(json.dumps({"error": exc.to_dict()}, indent=2))
        sys.exit(exc.exit_code)


def _batch_items(path: str) -> list[Any]:
    """The items of a JSON-lines file: one JSON value per non-blank line."""
    try:
        if path == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.UsageError(f"cannot read the batch file {path}: {exc}") from None
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise click.UsageError(
                f"{path}, line {number}: not valid JSON ({exc}); each line is one item"
            ) from None
    return items


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_home
def doctor(home: Home, as_json: bool) -> None:
    """Show Python, platform, the event loop, available isolation, the default limits, and
    the cluster of [cluster] when one is configured (its nodes, their resources and the
    isolation each can give)."""
    from ..follow import following
    from .status import following_text

    try:
        cfg = load_config(home.config_file)
        config_error = None
    except ConfigError as exc:
        cfg = None
        config_error = exc.message
    reports = [b.report() for b in available_backends()]
    try:
        chosen = choose_backend(cfg.isolation if cfg else "auto").name
    except ConfigError as exc:
        chosen = f"none: {exc.message}"
    loop = _event_loop()
    data: dict[str, Any] = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "event_loop": loop,
        "home": str(home.root),
        "config_file": str(home.config_file),
        "config_error": config_error,
        "isolation": {"chosen": chosen, "backends": msgspec.to_builtins(reports)},
        "limits": cfg.limits.model_dump() if cfg else None,
        "require_namespaces": cfg.require_namespaces if cfg else None,
        "cluster": _cluster(cfg, chosen),
        "following": following(home),
    }
    if as_json:
        echo_json(data)
        return
    click.echo(f"python      {data['python']} ({data['executable']})")
    click.echo(f"platform    {data['platform']}")
    if loop["error"]:
        click.echo(f"event loop  ERROR: {loop['error']}")
    else:
        click.echo(f"event loop  {loop['name']} {loop['version']} ({loop['why']})")
    click.echo(f"home        {data['home']}")
    if config_error:
        click.echo(f"config      ERROR: {config_error}")
    click.echo(f"isolation   {chosen}")
    if cfg:
        need = "yes: plugins run only in namespaces" if cfg.require_namespaces else "no"
        click.echo(f"require_namespaces {need}")
    for r in reports:
        state = "available" if r.available else "NOT available"
        click.echo(f"  backend {r.backend} ({r.level}): {state}")
        for layer, what in r.layers.items():
            click.echo(f"    {layer:<18} {what}")
        for w in r.warnings:
            click.echo(f"    warning: {w}")
    if cfg:
        lim = ", ".join(f"{k}={v}" for k, v in cfg.limits.model_dump().items())
        click.echo(f"limits      {lim}")
    for line in _cluster_lines(data["cluster"], chosen):
        click.echo(line)
    if data["following"] is not None:
        click.echo(following_text(home).rstrip().replace("following ", "following   ", 1))


def _cluster(cfg: HostConfig | None, chosen: str) -> dict[str, Any] | None:
    """The cluster of ``[cluster]`` as doctor shows it; None when none is configured
    (Ray is then never imported)."""
    if cfg is None or cfg.cluster is None:
        return None
    from ..cluster.survey import survey

    # The nodes are asked about the backend the host would use (auto: the one it chose).
    wanted = cfg.isolation if chosen.startswith("none") else chosen
    return survey(cfg.cluster, wanted)


def _cluster_lines(cluster: dict[str, Any] | None, chosen: str) -> list[str]:
    if cluster is None:
        return ["cluster     none configured (plugins run here; [cluster] in docs/cluster.md)"]
    head = f"cluster     {cluster['backend']} at {cluster['address']!r}"
    if cluster.get("note"):
        return [f"{head}: {cluster['note']}"]
    if cluster["error"]:
        return [f"{head}: ERROR: {printable(cluster['error'])}"]
    nodes = cluster["nodes"]
    lines = [f"{head}: {len(nodes)} live node{'s' if len(nodes) != 1 else ''}"]
    for n in nodes:
        lines.append(
            f"  node {printable(str(n.get('name') or n['hostname']))} ({n['address']}, "
            f"id {n['node_id'][:12]})"
        )
        lines.append(f"    resources  {_resources(n['resources'])}")
        if n.get("labels"):
            labels = ", ".join(f"{k}={v}" for k, v in sorted(n["labels"].items()))
            lines.append(f"    labels     {printable(labels)}")
        if n["error"]:
            lines.append(f"    ERROR: {printable(n['error'])}")
            continue
        lines.append(f"    mcphost    {n['mcphost']}")
        for b in n["backends"]:
            state = "available" if b["available"] else "NOT available"
            lines.append(f"    backend {b['backend']} ({b['level']}): {state}")
        if n["isolation"]:
            lines.append(f"    isolation  {n['isolation']}: workers can start here")
        else:
            lines.append(
                f"    isolation  NONE for the host's {chosen!r}: {printable(n['refusal'] or '')}"
            )
    return lines


def _resources(resources: dict[str, float]) -> str:
    """Ray's resources of a node, memory in GiB, Ray's per-node markers left out."""
    parts = []
    for key, value in sorted(resources.items()):
        if key.startswith("node:"):
            continue
        if "memory" in key:
            parts.append(f"{key}={value / 2**30:.1f}GiB")
        else:
            parts.append(f"{key}={value:g}")
    return ", ".join(parts)


def _event_loop() -> dict[str, Any]:
    """Which event loop mcphost's own processes run, its version and why."""
    from importlib.metadata import PackageNotFoundError, version

    from mcphost.sandbox.loops import ENV, loop_name

    try:
        name = loop_name()
    except ConfigError as exc:
        return {"name": None, "version": None, "why": None, "error": exc.message}
    if name == "uvloop":
        try:
            ver = version("uvloop")
        except PackageNotFoundError:
            ver = "?"
    else:
        ver = sys.version.split()[0]
    chosen = os.environ.get(ENV, "").strip()
    if chosen:
        why = f"{ENV}={chosen}"
    elif name == "uvloop":
        why = f"the default; {ENV}=asyncio runs the standard library's"
    else:
        why = "uvloop is not installed"
    return {"name": name, "version": ver, "why": why, "error": None}
