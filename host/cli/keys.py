"""``mcphost keys``: signing keys and the trust store (generate, trust, list, revoke).

Every change to the trust store, and every refusal, is written to the audit log.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

import click
import msgspec

from mcphost.sdk.errors import ConfigError, MCPHostError
from mcphost.security import (
    AuditLog,
    TrustStore,
    generate_key,
    write_private_key,
    write_public_key,
)

from ..home import Home
from .homes import pass_existing_home, pass_home_to_create
from .main import echo_json, main

__all__ = ["keys_group", "passphrase_from_env_or_prompt"]

_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
#: Read instead of prompting, for scripts and CI.
PASSPHRASE_ENV = "MCPHOST_KEY_PASSPHRASE"


def passphrase_from_env_or_prompt(*, confirm: bool) -> bytes:
    """The key passphrase from ``$MCPHOST_KEY_PASSPHRASE``, else asked for (hidden)."""
    value = os.environ.get(PASSPHRASE_ENV)
    if value is None:
        value = click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm)
    if not value:
        raise ConfigError("the passphrase is empty; give one or use --no-passphrase")
    return value.encode("utf-8")


def _when(unix: float | None) -> str:
    if unix is None:
        return ""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@main.group("keys")
def keys_group() -> None:
    """Signing keys and the keys this host trusts."""


@keys_group.command("generate")
@click.argument("name")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory for NAME.key and NAME.pub.",
)
@click.option(
    "--passphrase/--no-passphrase",
    default=False,
    help=f"Encrypt the private key (asked for, or taken from ${PASSPHRASE_ENV}).",
)
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
@pass_home_to_create
def generate(home: Home, name: str, out: Path, passphrase: bool, force: bool) -> None:
    """Create a signing key pair: NAME.key (private, mode 0600) and NAME.pub."""
    if not _KEY_NAME.fullmatch(name):
        raise click.BadParameter("use letters, digits, '.', '_' or '-'", param_hint="NAME")
    private, public = out / f"{name}.key", out / f"{name}.pub"
    for path in (private, public):
        if path.exists() and not force:
            raise ConfigError(f"{path} already exists; pick another NAME or pass --force")
    secret = passphrase_from_env_or_prompt(confirm=True) if passphrase else None
    key = generate_key()
    write_private_key(private, key, secret)
    write_public_key(public, key)
    AuditLog(home.audit_log).append("key.generate", key_id=key.key_id, detail=str(public))
    click.echo(key.key_id)
    click.echo(f"private key: {private} (keep it secret)", err=True)
    click.echo(
        f"public key:  {public} (hosts trust it with `mcphost keys trust {public}`)", err=True
    )


@keys_group.command("trust")
@click.argument("pubkey_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", help="A name to show for this key in `mcphost keys list`.")
@pass_home_to_create
def trust(home: Home, pubkey_file: Path, name: str | None) -> None:
    """Trust the public key in PUBKEY_FILE: plugins it signs may be installed."""
    audit = AuditLog(home.audit_log)
    try:
        try:
            pem = pubkey_file.read_bytes()[: 64 * 1024]
        except OSError as exc:
            raise ConfigError(
                f"cannot read public key {pubkey_file}: {exc.strerror or exc}"
            ) from exc
        key_id = TrustStore(home.keys_dir).trust(pem, name)
    except MCPHostError as exc:
        audit.append("key.trust", outcome="refused", detail=f"{pubkey_file}: {exc.message}")
        raise
    audit.append("key.trust", key_id=key_id, detail=name)
    click.echo(key_id)


@keys_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
@pass_existing_home
def list_keys(home: Home, as_json: bool) -> None:
    """List trusted and revoked keys."""
    records = TrustStore(home.keys_dir).list()
    if as_json:
        echo_json(msgspec.to_builtins(records))
        return
    if not records:
        click.echo(f"no trusted keys in {home.keys_dir}: add one with `mcphost keys trust KEY.pub`")
        return
    rows = [
        (
            r.key_id,
            r.name or "",
            _when(r.added),
            f"revoked {_when(r.revoked_at)}" + (f": {r.reason}" if r.reason else "")
            if r.revoked
            else "trusted",
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for key_id, key_name, added, status in rows:
        click.echo(
            f"{key_id:<{widths[0]}}  {key_name:<{widths[1]}}  {added:<{widths[2]}}  {status}"
        )


@keys_group.command("revoke")
@click.argument("key_id")
@click.option("--reason", default="", help="Why, for the audit log and `keys list`.")
@pass_existing_home
def revoke(home: Home, key_id: str, reason: str) -> None:
    """Revoke KEY_ID: plugins signed by it are refused from now on."""
    audit = AuditLog(home.audit_log)
    try:
        record = TrustStore(home.keys_dir).revoke(key_id, reason)
    except MCPHostError as exc:
        audit.append("key.revoke", key_id=key_id, outcome="refused", detail=exc.message)
        raise
    audit.append("key.revoke", key_id=key_id, detail=reason or None)
    click.echo(f"revoked {record.key_id}")
    click.echo(
        "plugins signed by it are refused from now on; running hosts stop them within a second",
        err=True,
    )
