"""``mcphost status``: what the hosts running on this home are doing, asked of each over
its control socket (:mod:`mcphost.host.observe.control`)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from mcphost.sdk.text import printable

from ..home import Home
from ..observe.control import alive, find_hosts
from .homes import pass_existing_home
from .main import main

__all__ = ["render", "status"]

#: Moves the cursor home and clears the screen: ``--watch`` redraws in place.
REDRAW = "\x1b[H\x1b[2J"
COLUMNS = (
    ("PLUGIN", "plugin", "<"),
    ("VERSION", "version", "<"),
    ("STATE", "state", "<"),
    ("PID", "pid", ">"),
    ("MEM MB", "memory_mb", ">"),
    ("CPU S", "cpu_seconds", ">"),
    ("RESTARTS", "restarts", ">"),
    ("IN FLIGHT", "in_flight", ">"),
    ("CALLS", "calls", ">"),
    ("CALLS/S", "calls_per_second", ">"),
    ("P50 MS", "p50_ms", ">"),
    ("P99 MS", "p99_ms", ">"),
    ("REPLICAS", "replicas", ">"),
    ("WHERE", "where", "<"),
)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the hosts' status as JSON.")
@click.option(
    "--watch", is_flag=True, help="Redraw once a second until interrupted (Ctrl-C), like top."
)
@pass_existing_home
def status(home: Home, as_json: bool, watch: bool) -> None:
    """Show what each host running on this home is doing: per plugin its version, state,
    worker, memory, CPU, restarts, calls in flight, calls/s and p50/p99 of recent calls.

    Every running `mcphost serve` (and every application embedding the Host) answers on
    a control socket under the home's run directory. Exit 1 when none runs.
    """
    if not watch:
        hosts = find_hosts(home.run_dir)
        if not hosts:
            click.echo(none_running(home), err=True)
            sys.exit(1)
        click.echo(_json(hosts, home) if as_json else following_text(home) + render(hosts))
        return
    try:
        while True:
            hosts = find_hosts(home.run_dir)
            if as_json:
                text = _json(hosts, home)
            else:
                text = following_text(home)
                text += render(hosts) if hosts else none_running(home)
                text += f"\n\n{time.strftime('%H:%M:%S')}  every 1 s; Ctrl-C to stop"
            click.echo(REDRAW + text, nl=True)
            time.sleep(1.0)
    except KeyboardInterrupt:
        click.echo("")


def none_running(home: Home) -> str:
    return f"no mcphost host is running on the home {home.root}"


def _json(hosts: list[dict[str, Any]], home: Home) -> str:
    from ..follow import following

    return json.dumps(
        {"home": str(home.root), "hosts": hosts, "following": following(home)},
        indent=2,
        sort_keys=True,
    )


def following_text(home: Home) -> str:
    """A following home's first lines: whom it follows, in step or why not ("" when it
    follows no primary; see docs/cluster.md)."""
    from ..follow import following

    f = following(home)
    if f is None:
        return ""
    primary = printable(str(f.get("primary")))
    contact = f.get("last_contact")
    seen = time.strftime("%H:%M:%S", time.localtime(contact)) if contact else "never"
    if f.get("error"):
        state = f"NOT in step (last contact {seen}): {printable(str(f['error']))}"
    elif f.get("in_step"):
        state = f"in step at generation {f.get('generation')} (last contact {seen})"
    else:
        state = "starting"
    pid = f.get("pid")
    if isinstance(pid, int) and not alive(pid):
        state += f" (its following server, pid {pid}, is not running)"
    return f"following {primary}: {state}\n\n"


def render(hosts: list[dict[str, Any]]) -> str:
    """A readable table per host."""
    return "\n\n".join(_host_text(h) for h in hosts)


def _host_text(h: dict[str, Any]) -> str:
    fe = h.get("frontend")
    what = " ".join(_command(h.get("argv") or []))
    lines = [
        f"host pid {h.get('pid')}  {printable(what)}",
        f"  up {_duration(h.get('uptime_seconds'))}"
        + (
            f"  {fe['transport']}  clients {fe['sessions']} ({fe['sessions_opened']} since start)"
            if fe
            else "  embedded (no MCP front end)"
        ),
    ]
    rows = [[c[0] for c in COLUMNS]]
    for p in h.get("plugins", []):
        rows.append([printable(_cell(_value(p, key))) for _, key, _align in COLUMNS])
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for r in rows:
        cells = [f"{v:{align}{w}}" for v, w, (_, _, align) in zip(r, widths, COLUMNS, strict=True)]
        lines.append("  " + "  ".join(cells).rstrip())
    if len(rows) == 1:
        lines.append("  (no plugins)")
    for p in h.get("plugins", []):
        if p.get("failure"):
            lines.append(f"  {printable(p['plugin'])} failed: {printable(str(p['failure']))}")
    for p in h.get("plugins", []):
        placed = _placements(p)
        if len(placed) > 1 and any(place != "local" for place in placed):
            each = ", ".join(f"{i} {place}" for i, place in enumerate(placed))
            lines.append(f"  {printable(p['plugin'])} replicas: {printable(each)}")
    for p in h.get("plugins", []):
        scaling = p.get("scaling")
        if scaling:
            lines.append("  " + printable(_scaling_text(p["plugin"], scaling)))
    for key, title in (("streams", "streams"), ("queues", "queues")):
        if h.get(key):
            lines.append(f"  {title}: " + "; ".join(printable(json.dumps(x)) for x in h[key]))
    pending = h.get("restart_pending") or []
    if pending:
        lines.append("  settings that need a restart:")
        for s in pending:
            lines.append(
                f"    {s['key']}: running {json.dumps(s['running'])}, "
                f"configured {json.dumps(s['configured'])}"
            )
    if h.get("config_error"):
        lines.append(f"  config.toml refused (running on the last good one): {h['config_error']}")
    if h.get("registry_error"):
        lines.append(f"  registry: {h['registry_error']}")
    events = h.get("events") or []
    if events:
        lines.append("  recent:")
        for e in events[-5:]:
            when = time.strftime("%H:%M:%S", time.localtime(e.get("time", 0)))
            lines.append(
                f"    {when}  {e.get('kind')}  {printable(e.get('plugin', ''))} "
                f"{printable(e.get('version', ''))}  {printable(e.get('detail', ''))}".rstrip()
            )
    return "\n".join(lines)


def _value(p: dict[str, Any], key: str) -> Any:
    """A plugin's cell: its replicas as a count (1 for a single worker; with a scaling
    pool's bounds after it: ``2 (1-4)``); where its workers run (``local``, ``ray@NODE``,
    or for a pool the count of each: ``2 ray@a, 1 local``)."""
    if key == "where":
        counts: dict[str, int] = {}
        for place in _placements(p):
            counts[place] = counts.get(place, 0) + 1
        if len(counts) == 1 and sum(counts.values()) == 1:
            return next(iter(counts))
        return ", ".join(f"{n} {place}" for place, n in counts.items())
    if key != "replicas":
        return p.get(key)
    count = len(p.get("replicas") or ()) or 1
    scaling = p.get("scaling")
    if scaling:
        return f"{count} ({scaling['min_replicas']}-{scaling['max_replicas']})"
    return count


def _placements(p: dict[str, Any]) -> list[str]:
    """Where each worker of a plugin runs: ``local``, ``ray@NODE``, or ``ray`` while a
    remote replica has no worker (not started, restarting)."""
    out = []
    for r in p.get("replicas") or [p]:
        place = str(r.get("placement") or "local")
        if r.get("node"):
            place += f"@{r['node']}"
        out.append(place)
    return out


def _scaling_text(plugin: str, scaling: dict[str, Any]) -> str:
    text = (
        f"{plugin} scales {scaling['min_replicas']}-{scaling['max_replicas']} replicas: "
        f"up {scaling['scaled_up']}, down {scaling['scaled_down']}"
    )
    last = scaling.get("last")
    if last:
        when = time.strftime("%H:%M:%S", time.localtime(last.get("time", 0)))
        text += f"; last {when} {last['from']} -> {last['to']} ({last['reason']})"
    return text


def _command(argv: list[str]) -> list[str]:
    if not argv:
        return ["(embedded)"]
    name = argv[0].rsplit("/", 1)[-1]
    return [name, *argv[1:]]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if value >= 100 else f"{value:.3g}" if value < 1 else f"{value:.2f}"
    return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m{sec:02d}s"
    return f"{m}m{sec:02d}s" if m else f"{sec}s"
