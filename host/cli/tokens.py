"""``mcphost tokens``: bearer tokens for ``mcphost serve --http`` (create, list, revoke).

A token is printed once, when it is made; the home keeps only its hash. Every creation
and revocation is written to the audit log.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import click

from mcphost.security import AuditLog, TokenError, create_token, load_tokens, revoke_token

from ..home import Home
from .homes import pass_existing_home, pass_home_to_create
from .main import echo_json, main

__all__ = ["parse_expiry", "tokens_group"]

_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_expiry(text: str, now: float | None = None) -> float:
    """``30d``, ``12h``, ``90m``, ``2w`` from now, or a date/time such as ``2027-01-31``
    (UTC unless it names a zone); returns a Unix time."""
    now = time.time() if now is None else now
    m = _DURATION.fullmatch(text.strip())
    if m:
        return now + int(m.group(1)) * _UNITS[m.group(2)]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise TokenError(
            f"--expires {text!r}: give a duration (30d, 12h, 90m, 2w) or a date "
            "(2027-01-31 or 2027-01-31T12:00:00+00:00)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _when(unix: float | None) -> str:
    if unix is None:
        return "never"
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@main.group("tokens")
def tokens_group() -> None:
    """Bearer tokens that MCP clients present to `mcphost serve --http`."""


@tokens_group.command("create")
@click.argument("name")
@click.option(
    "--tools",
    "patterns",
    multiple=True,
    metavar="PATTERN",
    help="Only these tools (shell-style over <plugin>.<tool>, e.g. 'textkit.*'; repeatable). "
    "Default: every tool.",
)
@click.option(
    "--expires",
    metavar="WHEN",
    help="When the token stops working: a duration (30d, 12h, 90m, 2w) or a date. Default: never.",
)
@click.option(
    "--follow",
    is_flag=True,
    help="A follower's token: it may read the registry this home publishes "
    "(`serve --publish-registry`) and call no tool (docs/cluster.md).",
)
@pass_home_to_create
def create(
    home: Home, name: str, patterns: tuple[str, ...], expires: str | None, follow: bool
) -> None:
    """Make a token called NAME and print it (it is shown this once only)."""
    if follow and patterns:
        raise TokenError("a --follow token calls no tool: leave out --tools")
    expires_at = parse_expiry(expires) if expires is not None else None
    secret, token = create_token(
        home.tokens_file, name, tools=patterns, expires=expires_at, follow=follow
    )
    AuditLog(home.audit_log).append(
        "token.create",
        detail=f"name={name} tools={'-' if follow else ','.join(patterns) or '*'} "
        f"expires={_when(expires_at)}" + (" follow" if follow else ""),
    )
    click.echo(secret)
    if follow:
        click.echo(
            f"token {name!r} created for a follower (reads the published registry, calls no "
            f"tool; expires {_when(token.expires)}). It is shown only now: give it to the "
            "follower in $MCPHOST_FOLLOW_TOKEN or a file (--follow-token-file).",
            err=True,
        )
        return
    click.echo(
        f"token {name!r} created (tools: {', '.join(token.tools) or 'all'}; expires "
        f"{_when(token.expires)}). It is shown only now: give it to the client as the header "
        "'Authorization: Bearer <token>'.",
        err=True,
    )


@tokens_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_existing_home
def list_(home: Home, as_json: bool) -> None:
    """Show the tokens (names, tool patterns, expiry; never the secrets)."""
    tokens = load_tokens(home.tokens_file)
    now = time.time()
    if as_json:
        echo_json(
            [
                {
                    "name": t.name,
                    "tools": list(t.tools),
                    "follow": t.follow,
                    "created": _when(t.created),
                    "expires": None if t.expires is None else _when(t.expires),
                    "expired": t.expired(now),
                }
                for t in tokens
            ]
        )
        return
    if not tokens:
        click.echo(f"no tokens in {home.tokens_file}; make one with `mcphost tokens create NAME`")
        return
    for t in tokens:
        state = " (expired)" if t.expired(now) else ""
        click.echo(
            f"{t.name}\ttools: {'none (follower)' if t.follow else ', '.join(t.tools) or 'all'}\t"
            f"created {_when(t.created)}\texpires {_when(t.expires)}{state}"
        )


@tokens_group.command("revoke")
@click.argument("name")
@pass_existing_home
def revoke(home: Home, name: str) -> None:
    """Revoke the token called NAME; a running server refuses it from the next request."""
    try:
        revoke_token(home.tokens_file, name)
    except TokenError:
        AuditLog(home.audit_log).append("token.revoke", outcome="refused", detail=f"name={name}")
        raise
    AuditLog(home.audit_log).append("token.revoke", detail=f"name={name}")
    click.echo(f"token {name!r} revoked")
