"""``mcphost audit``: show the audit log of keys, trust, signing and refusals."""

from __future__ import annotations

import click

from mcphost.security import AuditLog

from ..home import Home
from .homes import pass_existing_home
from .main import echo_json, main

__all__ = ["audit"]


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the last N entries.")
@pass_existing_home
def audit(home: Home, as_json: bool, limit: int | None) -> None:
    """Show the audit log, oldest first."""
    entries = AuditLog(home.audit_log).read()
    if limit is not None:
        entries = entries[-limit:]
    if as_json:
        echo_json(entries)
        return
    if not entries:
        click.echo(f"the audit log {home.audit_log} is empty")
        return
    for e in entries:
        subject = " ".join(
            str(e[k]) for k in ("plugin", "version", "key_id") if e.get(k) is not None
        )
        detail = f"  {e['detail']}" if e.get("detail") else ""
        click.echo(
            f"{e.get('time', '?')}  {e.get('action', '?'):<16} {e.get('outcome', '?'):<8} "
            f"{subject}{detail}"
        )
