"""``mcphost plugin ...``: install, list, inspect, swap, roll back, remove, verify, reset.

Every change goes through the registry (one transaction each); a running host on the
same home follows it within a second. ``--json`` outputs are documented in docs/cli.md.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import msgspec

from mcphost.registry import CheckedWheel, Registry, VersionRecord
from mcphost.registry.approvals import ApprovedItem, diff, differences, items_of_tools
from mcphost.sdk.errors import ApprovalRequired, MCPHostError, RegistryError
from mcphost.sdk.text import printable
from mcphost.security.permissions import Permissions

from ..config import HostConfig, load_config
from ..follow import refuse_if_following
from ..home import Home
from ..isolation_backend import isolation_backend
from ..policy import enforce_policy
from ..registry_link import (
    check_names,
    grants_for,
    learn_tools,
    limits_for,
    missing_tools,
    source_for,
)
from ..sources import PluginSource
from ..verification import UNSIGNED_WARNING, verify_source
from .homes import pass_existing_home, pass_home_to_create
from .main import echo_json, main, run_async

__all__ = ["ensure_tools", "plugin"]


@main.group()
def plugin() -> None:
    """Install, swap, roll back and remove plugin versions."""


# -- helpers -----------------------------------------------------------------------


def _config(home: Home) -> HostConfig:
    return load_config(home.config_file)


def _open(home: Home, cfg: HostConfig | None = None, *, reading: bool = False) -> Registry:
    """The registry of ``home``; a command that only reads opens a read-only home
    read-only instead of failing on the change lock."""
    cfg = cfg or _config(home)
    readonly = reading and not home.writable
    return Registry.open(home.ensure(), allow_unsigned=cfg.allow_unsigned, readonly=readonly)


def _progress(step: str) -> None:
    """Long steps say what they do, on a terminal only (never in --json output)."""
    if sys.stderr.isatty():
        click.echo(f"  ... {step}", err=True)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe_permissions(p: Permissions) -> list[str]:
    """What a plugin asks for, one line per permission, for a person to approve."""
    lines = []
    if p.network is None:
        lines.append("network: none")
    else:
        lines.append("network: " + (", ".join(p.network) or "any"))
    lines.append("read files: " + (", ".join(p.read_paths) or "none"))
    lines.append("write files: " + (", ".join(p.write_paths) or "none (its own data dir only)"))
    lines.append("environment variables: " + (", ".join(p.env) or "none"))
    lim = {k: v for k, v in msgspec.structs.asdict(p.limits).items() if v is not None}
    lines.append(
        "limits: " + (", ".join(f"{k}={v}" for k, v in lim.items()) or "the host's defaults")
    )
    # The publisher wrote these paths and names: no control character reaches the terminal.
    return [printable(line) for line in lines]


def _version_json(r: VersionRecord) -> dict[str, Any]:
    return {
        "version": r.version,
        "active": r.active,
        "dist_name": r.dist_name,
        "key_id": r.key_id,
        "sequence": r.sequence,
        "wheel_sha256": r.wheel_sha256,
        "wheel_name": r.wheel_name,
        "installed_at": r.installed_at,
        "installed_by": r.installed_by,
        "path": r.root,
        "permissions": msgspec.to_builtins(r.permissions),
        "tools": [t.name for t in r.tools] if r.tools is not None else None,
        "approved": (
            {"at": r.approved.at, "by": r.approved.by} if r.approved is not None else None
        ),
    }


def ensure_tools(home: Home, cfg: HostConfig, reg: Registry, rec: VersionRecord) -> VersionRecord:
    """Learn a version's tools from one handshake when the registry does not know them."""
    if rec.tools is not None:
        return rec
    _progress(f"starting {rec.label} once to learn its tools")
    try:
        tools = run_async(learn_tools(home, cfg, source_for(rec)))
    except MCPHostError as exc:
        raise RegistryError(
            f"{rec.label} is installed but could not start: {exc.message}; it stays "
            f"inactive. Fix the plugin and install a new version, or remove it with "
            f"`mcphost plugin remove {rec.plugin} {rec.version}`",
            data={"plugin": rec.plugin, "version": rec.version},
        ) from None
    reg.set_tools(rec.plugin, rec.version, tools)
    return reg.version(rec.plugin, rec.version)


def _check_switch(
    reg: Registry, target: VersionRecord, allow_missing: bool, command: str
) -> list[str]:
    """Tools the active version has and ``target`` lacks; refuse unless allowed."""
    active = reg.plugin(target.plugin).active_version
    if active is None or active == target.version:
        return []
    missing = missing_tools(reg.version(target.plugin, active).tools, target.tools)
    if missing and not allow_missing:
        raise RegistryError(
            f"{target.label} lacks tools that {target.plugin} {active} has: "
            f"{', '.join(missing)}; callers of those tools would fail. Run `{command} "
            "--allow-missing-tools` to switch anyway",
            data={"plugin": target.plugin, "version": target.version, "missing": missing},
        )
    return missing


def _verify_before_switch(home: Home, cfg: HostConfig, rec: VersionRecord, action: str) -> None:
    _progress(f"verifying {rec.label}")
    verify_source(home, cfg, source_for(rec), action=f"plugin.{action}")


def switch_version(
    home: Home,
    cfg: HostConfig,
    reg: Registry,
    rec: VersionRecord,
    *,
    action: str,
    allow_missing: bool,
    command: str,
    reason: str,
    force: bool = False,
    yes: bool = False,
) -> dict[str, Any]:
    """Make ``rec`` the active version of its plugin (``action``: "swap" or "rollback")
    after every check an operator's switch gets: its tools known, none missing unless
    allowed, no name clash, no composition broken unless forced, changed descriptions
    approved, the version verified again. Used by the CLI and by a following home."""
    rec = ensure_tools(home, cfg, reg, rec)
    missing = _check_switch(reg, rec, allow_missing, command)
    check_names(home, cfg, {r.plugin: r.tools for r in reg.active()}, (rec.plugin, rec.tools))
    change = f"{action} of {rec.plugin} to {rec.version}"
    broken = _composition_guard(home, reg, rec.plugin, rec.tools, force, change, command)
    items = items_of_tools(rec.tools or [])
    changes = _approve_descriptions(reg, rec, items, yes, command)
    _verify_before_switch(home, cfg, rec, action)
    t0 = time.perf_counter()
    reg.approve(rec.plugin, rec.version, items)
    if changes:
        reg.audit.append(
            "plugin.approve",
            plugin=rec.plugin,
            version=rec.version,
            key_id=rec.key_id,
            outcome="approved",
            detail="; ".join(changes),
        )
    act = reg.activate(rec.plugin, rec.version, action=action, reason=reason)
    marked = _mark_broken(home, broken, change, command)
    return {
        "plugin": rec.plugin,
        "from": act.from_version,
        "to": act.to_version,
        "action": action,
        "missing_tools": missing,
        "descriptions_changed": changes,
        "compositions_unavailable": marked,
        "seconds": round(time.perf_counter() - t0, 4),
    }


def _approve_descriptions(
    reg: Registry, rec: VersionRecord, items: list[ApprovedItem], yes: bool, command: str
) -> list[str]:
    """Show how ``rec``'s tools (names, descriptions, schemas) differ from what was
    approved for the active version, and ask for approval again (``yes`` gives it).
    Returns the changes (empty: nothing to approve)."""
    active = reg.plugin(rec.plugin).active_version
    if active is None or active == rec.version:
        return []
    current = reg.version(rec.plugin, active)
    if current.approved is not None:
        baseline = current.approved.items
    elif current.tools is not None:
        baseline = items_of_tools(current.tools)
    else:
        return []
    # A tool taken away shows nothing new (the check of missing tools covers it); a tool
    # added or changed is something clients will read and trust: it is approved first.
    changes = differences(baseline, items, removals=False)
    if not changes:
        return []
    click.echo(
        f"{rec.label} shows clients other tools, descriptions or schemas than "
        f"{rec.plugin} {active}, which the operator approved:",
        err=True,
    )
    for line in changes:
        click.echo(printable(f"  {line}"), err=True)
    # What a plugin wrote reaches the terminal without control characters.
    text = diff(baseline, items, f"{active}, approved", rec.version, removals=False)
    click.echo(printable(text, multiline=True), err=True)
    if yes:
        return changes
    if not sys.stdin.isatty():
        raise ApprovalRequired(
            f"{rec.label} changes what clients are shown of its tools (above); nothing was "
            f"changed. Review the difference, then run `{command} --yes` to approve it",
            data={"plugin": rec.plugin, "version": rec.version, "changes": changes},
        )
    if not click.confirm("Approve these descriptions?", default=False, err=True):
        click.echo("nothing changed", err=True)
        raise SystemExit(1)
    return changes


def _composition_guard(
    home: Home,
    reg: Registry,
    plugin: str,
    new_tools: list[Any] | None,
    force: bool,
    change: str,
    command: str,
) -> list[Any]:
    """Refuse a change that would break an installed composition (unless ``force``);
    returns the compositions to mark unavailable once the change is made."""
    if not (home.root / "compositions.sqlite3").exists():
        return []  # no composition installed: nothing to load or check
    from ..compose.safety import guard

    active = {r.plugin: r.tools for r in reg.active()}
    return guard(home, active, plugin, new_tools, force=force, change=change, command=command)


def _mark_broken(home: Home, broken: list[Any], change: str, command: str) -> list[str]:
    if not broken:
        return []
    from ..compose.safety import refuse_or_mark

    marked = refuse_or_mark(home, broken, force=True, change=change, command=command)
    for name in marked:
        click.echo(f"warning: composition {name} is now unavailable ({change})", err=True)
    return marked


# -- commands ----------------------------------------------------------------------


@plugin.command()
@click.argument("wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--yes", "-y", is_flag=True, help="Approve the permissions without asking.")
@click.option("--no-activate", is_flag=True, help="Install only; keep the active version.")
@click.option(
    "--find-links",
    "find_links",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A directory of dependency wheels (repeatable); the wheel's own "
    "directory is always searched.",
)
@click.option(
    "--allow-key-change",
    is_flag=True,
    help="Accept a wheel signed by another key than the one that owns the name.",
)
@click.option(
    "--allow-missing-tools",
    is_flag=True,
    help="Activate even if the new version lacks tools of the active one.",
)
@click.option("--reason", default="", help="Why, for the history.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_home_to_create
def install(
    home: Home,
    wheel: Path,
    yes: bool,
    no_activate: bool,
    find_links: tuple[Path, ...],
    allow_key_change: bool,
    allow_missing_tools: bool,
    reason: str,
    as_json: bool,
) -> None:
    """Verify WHEEL, show what it asks for, install it beside the other versions and
    (unless --no-activate) make it the active version."""
    refuse_if_following(home, "mcphost plugin install")
    cfg = _config(home)
    isolation_backend(cfg)  # a plugin that could not run here is not installed at all
    with _open(home, cfg) as reg, _unsigned_said_once():
        _progress(f"verifying {wheel.name}")
        checked = reg.check(wheel, allow_key_change=allow_key_change)
        for w in checked.warnings:
            click.echo(f"warning: {w}", err=True)
        try:
            check_policy(checked, cfg)
        except MCPHostError as exc:
            reg.audit.append(
                "plugin.install",
                plugin=checked.plugin,
                version=checked.version,
                key_id=checked.key_id,
                hashes={"wheel": checked.sha256},
                outcome="refused",
                detail=exc.message,
            )
            raise
        if not yes:
            _approve(checked)
        result = reg.install(
            checked,
            activate=False,
            find_links=find_links,
            allow_key_change=allow_key_change,
            reason=reason,
            progress=_progress,
        )
        rec = ensure_tools(home, cfg, reg, reg.version(result.plugin, result.version))
        switched: dict[str, Any] | None = None
        if not no_activate and not rec.active:
            switched = switch_version(
                home,
                cfg,
                reg,
                rec,
                action="activate",
                allow_missing=allow_missing_tools,
                command=f"mcphost plugin swap {rec.plugin} {rec.version}",
                reason=reason or "installed",
                yes=yes,
            )
        elif rec.approved is None:
            # Installing is approving what its tools show clients (their descriptions
            # and schemas); a host refuses a worker of this version that shows other.
            reg.approve(rec.plugin, rec.version, items_of_tools(rec.tools or []))
        rec = reg.version(result.plugin, result.version)
    if result.installed:
        outcome = "installed"
    elif switched:
        outcome = "reactivated"
    else:
        outcome = "already_active" if rec.active else "already_installed"
    out = {
        "result": outcome,
        "plugin": rec.plugin,
        "version": rec.version,
        "installed": result.installed,
        "active": rec.active,
        "previous": switched["from"] if switched else None,
        "key_id": rec.key_id,
        "wheel_sha256": rec.wheel_sha256,
        "tools": [t.name for t in rec.tools or []],
        "warnings": list(result.warnings),
        "repaired": list(result.repaired),
    }
    if as_json:
        echo_json(out)
        return
    signer = f"signed by {rec.key_id}" if rec.key_id else "UNSIGNED"
    headline = {
        "installed": f"installed {rec.label}",
        "reactivated": f"re-activated {rec.label}, installed already",
        "already_active": f"{rec.label} is installed and active already",
        "already_installed": f"{rec.label} is installed already",
    }[outcome]
    click.echo(f"{headline} ({signer}; sha256 {rec.wheel_sha256[:16]})")
    if result.repaired:
        more = f" and {len(result.repaired) - 5} more" if len(result.repaired) > 5 else ""
        click.echo(
            f"repaired {rec.label}: its installed files had changed since install "
            f"({'; '.join(result.repaired[:5])}{more}); restored them from the wheel"
        )
    click.echo(f"tools: {', '.join(t.name for t in rec.tools or []) or 'none'}")
    if switched:
        was = f" (was {out['previous']})" if out["previous"] else ""
        click.echo(f"active: {rec.label}{was}; running hosts switch within a second")
    elif rec.active:
        click.echo(f"active: {rec.label} (unchanged)")
    else:
        click.echo(f"not active; activate it with `mcphost plugin swap {rec.plugin} {rec.version}`")


@contextmanager
def _unsigned_said_once() -> Iterator[None]:
    """An install prints the check's warning about an unsigned wheel; the starts that
    follow (learning its tools, verifying before the switch) need not say it again."""

    def drop(record: logging.LogRecord) -> bool:
        return not hasattr(record, UNSIGNED_WARNING)

    logger = logging.getLogger("mcphost.verification")
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def check_policy(w: CheckedWheel, cfg: HostConfig) -> None:
    """Refuse, before anything is installed, a plugin the operator's policy would never
    let start (the same check runs again before every start)."""
    enforce_policy(
        PluginSource(
            name=w.plugin,
            version=w.version,
            entry=w.entry,
            paths=[],
            origin="registry",
            grants=grants_for(w.permissions),
            limits=limits_for(w.permissions),
            key_id=w.key_id,
        ),
        cfg,
    )


def _approve(w: CheckedWheel) -> None:
    click.echo(
        f"{w.label} ({w.dist_name}, "
        f"{'signed by ' + w.key_id if w.key_id else 'unsigned'}) asks for:",
        err=True,
    )
    for line in describe_permissions(w.permissions):
        click.echo(f"  {line}", err=True)
    if not sys.stdin.isatty():
        raise ApprovalRequired(
            "installing needs approval of the permissions above; run on a terminal to be "
            "asked, or pass --yes to approve them"
        )
    if not click.confirm("Install it?", default=False, err=True):
        click.echo("nothing installed", err=True)
        raise SystemExit(1)


@plugin.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the plugins as JSON.")
@pass_existing_home
def list_(home: Home, as_json: bool) -> None:
    """List installed plugins, their versions and the active one."""
    with _open(home, reading=True) as reg:
        plugins = reg.plugins()
    if as_json:
        echo_json(
            [
                {
                    "name": p.name,
                    "active": p.active_version,
                    "versions": p.versions,
                    "owner_key": p.owner_key,
                }
                for p in plugins
            ]
        )
        return
    if not plugins:
        click.echo(
            f"no plugins installed in the home {home.root}: install one with "
            "`mcphost plugin install WHEEL`"
        )
        return
    width = max(len(p.name) for p in plugins)
    click.echo(f"{'NAME':<{width}}  {'ACTIVE':<10}  {'VERSIONS':<24}  KEY")
    for p in plugins:
        click.echo(
            f"{p.name:<{width}}  {p.active_version or '-':<10}  "
            f"{', '.join(p.versions):<24}  {p.owner_key or 'unsigned'}"
        )


@plugin.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the details as JSON.")
@pass_existing_home
def info(home: Home, name: str, as_json: bool) -> None:
    """Show NAME's versions, active version, key, permissions and history."""
    with _open(home, reading=True) as reg:
        p = reg.plugin(name)
        versions = reg.versions(name)
        history = reg.history(name)
    if as_json:
        echo_json(
            {
                "name": p.name,
                "active": p.active_version,
                "owner_key": p.owner_key,
                "versions": [_version_json(v) for v in versions],
                "history": [msgspec.to_builtins(h) for h in history],
            }
        )
        return
    _show(
        f"{p.name}: active {p.active_version or 'none'}; name owned by "
        f"{p.owner_key or 'no key (unsigned)'}"
    )
    for v in versions:
        mark = "*" if v.active else " "
        _show(
            f" {mark} {v.version}  {v.key_id or 'unsigned'}  installed "
            f"{_when(v.installed_at)} by {v.installed_by}  sha256 {v.wheel_sha256[:16]}"
        )
        tools = ", ".join(t.name for t in v.tools) if v.tools is not None else "(not yet known)"
        _show(f"     tools: {tools}")
        if v.approved is not None:
            _show(f"     descriptions approved {_when(v.approved.at)} by {v.approved.by}")
        else:
            _show("     descriptions not approved yet (the next swap to it records them)")
        for line in describe_permissions(v.permissions):
            _show(f"     {line}")
    _show("history:")
    for h in history:
        change = f"{h.from_version or '-'} -> {h.to_version or '-'}"
        why = f"  ({h.reason})" if h.reason else ""
        _show(f"  {_when(h.at)}  {h.user:<10} {h.action:<10} {change}{why}")


def _show(line: str) -> None:
    """Print a line that holds text a plugin wrote (names, versions, permissions)."""
    click.echo(printable(line))


@plugin.command()
@click.argument("name")
@click.argument("version")
@click.option(
    "--allow-missing-tools",
    is_flag=True,
    help="Switch even if VERSION lacks tools of the active version.",
)
@click.option("--reason", default="", help="Why, for the history.")
@click.option(
    "--force",
    is_flag=True,
    help="Switch even if it breaks an installed composition (marked unavailable).",
)
@click.option("--yes", "-y", is_flag=True, help="Approve changed tool descriptions without asking.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_existing_home
def swap(
    home: Home,
    name: str,
    version: str,
    allow_missing_tools: bool,
    reason: str,
    force: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Make VERSION the active version of NAME; running hosts hot-swap to it."""
    refuse_if_following(home, f"mcphost plugin swap {name} {version}")
    cfg = _config(home)
    with _open(home, cfg) as reg:
        rec = reg.version(name, version)
        if rec.active:
            raise RegistryError(
                f"{rec.label} is the active version already; installed: "
                f"{', '.join(reg.plugin(name).versions)}"
            )
        out = switch_version(
            home,
            cfg,
            reg,
            rec,
            action="swap",
            allow_missing=allow_missing_tools,
            command=f"mcphost plugin swap {name} {version}",
            reason=reason,
            force=force,
            yes=yes,
        )
    _report_switch(out, as_json)


def _report_switch(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo_json(out)
        return
    if out["missing_tools"]:
        click.echo(f"warning: {out['to']} lacks {', '.join(out['missing_tools'])}", err=True)
    if out["descriptions_changed"]:
        click.echo(f"approved the changed descriptions of {out['plugin']} {out['to']}", err=True)
    click.echo(
        f"{out['plugin']}: {out['from'] or 'none'} -> {out['to']} ({out['action']}); "
        "running hosts switch within a second"
    )


@plugin.command()
@click.argument("name")
@click.option("--to", "to", help="Roll back to this installed version instead.")
@click.option(
    "--allow-missing-tools",
    is_flag=True,
    help="Switch even if the target lacks tools of the active version.",
)
@click.option("--reason", default="", help="Why, for the history.")
@click.option(
    "--force",
    is_flag=True,
    help="Switch even if it breaks an installed composition (marked unavailable).",
)
@click.option("--yes", "-y", is_flag=True, help="Approve changed tool descriptions without asking.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_existing_home
def rollback(
    home: Home,
    name: str,
    to: str | None,
    allow_missing_tools: bool,
    reason: str,
    force: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Go back to the version of NAME that was active before (or --to VERSION)."""
    refuse_if_following(home, f"mcphost plugin rollback {name}")
    cfg = _config(home)
    with _open(home, cfg) as reg:
        target = to if to is not None else reg.rollback_target(name)
        rec = reg.version(name, target)
        if rec.active:
            raise RegistryError(f"{rec.label} is the active version already; nothing to roll back")
        out = switch_version(
            home,
            cfg,
            reg,
            rec,
            action="rollback",
            allow_missing=allow_missing_tools,
            command=f"mcphost plugin rollback {name} --to {rec.version}",
            reason=reason,
            force=force,
            yes=yes,
        )
    _report_switch(out, as_json)


@plugin.command()
@click.argument("name")
@click.argument("version", required=False)
@click.option(
    "--force",
    is_flag=True,
    help="Remove the active version too (stops the plugin; compositions that use it are "
    "marked unavailable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_existing_home
def remove(home: Home, name: str, version: str | None, force: bool, as_json: bool) -> None:
    """Remove VERSION of NAME, or every version when VERSION is left out."""
    refuse_if_following(home, f"mcphost plugin remove {name}")
    with _open(home) as reg:
        active = reg.plugin(name).active_version
        broken: list[Any] = []
        change = f"removal of {name}"
        command = f"mcphost plugin remove {name}" + (f" {version}" if version else "")
        if active is not None and version in (None, active):
            broken = _composition_guard(home, reg, name, None, force, change, command)
        removed = reg.remove(name, version, force=force)
        _mark_broken(home, broken, change, command)
    if as_json:
        echo_json({"plugin": name, "removed": removed})
        return
    click.echo(f"removed {name} {', '.join(removed)}")


@plugin.command()
@click.argument("target", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
@pass_existing_home
def verify(home: Home, target: str | None, as_json: bool) -> None:
    """Verify a wheel file, an installed plugin directory, an installed plugin by NAME,
    or (without TARGET) every installed version, file by file. Exit 1 on any failure."""
    from mcphost.security.report import VerificationReport

    from .signing import verify_tree_report, verify_wheel_report

    reports: list[VerificationReport] = []
    path = Path(target) if target else None
    if path is not None and path.is_file():
        reports.append(verify_wheel_report(home, path))
    elif path is not None and path.is_dir() and any(path.glob("*.dist-info")):
        reports.append(verify_tree_report(home, path))
    else:
        cfg = _config(home)
        with _open(home, cfg, reading=True) as reg:
            names = [target] if target else [p.name for p in reg.plugins()]
            recs = [v for n in names for v in reg.versions(n)]
        for rec in recs:
            _progress(f"verifying {rec.label}")
            report = VerificationReport(target=rec.plugin_dir)
            try:
                verify_source(home, cfg, source_for(rec), report=report, action="plugin.verify")
                if not report.checks:
                    report.add(
                        "signature", rec.label, True, "unsigned; allowed by allow_unsigned = true"
                    )
            except MCPHostError as exc:
                report.error = exc.message
            report.target = f"{rec.label} ({rec.plugin_dir})"
            reports.append(report)
    if as_json:
        echo_json([r.to_dict() for r in reports])
    else:
        if not reports:
            click.echo(f"no plugins installed in the home {home.root}: nothing to verify")
        for r in reports:
            click.echo(r.render())
    if not all(r.ok for r in reports):
        raise SystemExit(1)


@plugin.command()
@click.argument("name")
@pass_existing_home
def reset(home: Home, name: str) -> None:
    """Clear NAME's failed state in running hosts, so its next call starts it again."""
    with _open(home) as reg:
        reg.request_reset(name)
    click.echo(f"{name}: reset requested; running hosts clear its failed state within a second")


def _add_signing() -> None:
    try:
        from .signing import sign_command
    except ImportError:  # pragma: no cover - shipped together
        return
    plugin.add_command(sign_command, "sign")


_add_signing()
