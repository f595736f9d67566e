"""``mcphost registry ...``: the registry as a whole; ``rebuild`` its records from the
store's signed wheels when its database was lost or damaged."""

from __future__ import annotations

import click

from mcphost.registry import Registry, rebuild_registry
from mcphost.sdk.errors import MCPHostError

from ..config import load_config
from ..home import Home
from .homes import pass_existing_home
from .main import echo_json, main
from .plugin import ensure_tools

__all__ = ["registry"]


@main.group()
def registry() -> None:
    """The registry as a whole: rebuild its records."""


@registry.command()
@click.option(
    "--force", is_flag=True, help="Rebuild even an intact database (its history is replaced)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_existing_home
def rebuild(home: Home, force: bool, as_json: bool) -> None:
    """Rebuild the registry's records from the signed wheels in the store.

    For a registry database that was lost, emptied or damaged: every wheel in the store
    is verified against the trust store and recorded with its version, key, sequence
    and permissions; the audit log says which version was active (else the highest).
    The old database is kept beside the new one."""
    cfg = load_config(home.config_file)
    report = rebuild_registry(home, allow_unsigned=cfg.allow_unsigned, force=force)
    warnings: list[str] = []
    if report.plugins:
        # Tools are not in the manifests: learn them as an install does, one start each.
        with Registry.open(home, allow_unsigned=cfg.allow_unsigned) as reg:
            for plugin in report.plugins:
                for rec in reg.versions(plugin):
                    try:
                        ensure_tools(home, cfg, reg, rec)
                    except MCPHostError as exc:
                        warnings.append(exc.message)
    if as_json:
        echo_json(
            {
                "plugins": report.plugins,
                "active": report.active,
                "skipped": report.skipped,
                "kept": report.kept,
                "warnings": warnings,
            }
        )
        return
    for plugin, versions in report.plugins.items():
        click.echo(f"{plugin} {', '.join(versions)}: active {report.active[plugin] or 'none'}")
    for wheel, why in report.skipped.items():
        click.echo(f"left out {wheel}: {why}", err=True)
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    total = sum(len(v) for v in report.plugins.values())
    kept = f"; the old database is kept as {report.kept}" if report.kept else ""
    plugins = len(report.plugins)
    click.echo(
        f"rebuilt the registry: {total} version{'' if total == 1 else 's'} of {plugins} "
        f"plugin{'' if plugins == 1 else 's'}{kept}"
    )
