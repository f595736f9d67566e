"""``mcphost plugin sign`` and ``mcphost plugin verify``: the commands and their helpers.

The ``plugin`` group adds :data:`sign_command` (its ``verify`` command uses these); other code
can call :func:`verify_wheel_report` and :func:`verify_tree_report`, which never raise
for a plugin that fails verification: they return the report and log the refusal.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import click

from mcphost.sdk.errors import ConfigError, VerificationError
from mcphost.security import (
    AuditLog,
    Permissions,
    PrivateKey,
    TrustStore,
    VerificationReport,
    load_permissions,
    load_private_key,
    sign_wheel,
    verify_tree,
    verify_wheel_bytes,
)

from ..home import Home
from .homes import pass_home_to_create
from .keys import passphrase_from_env_or_prompt

__all__ = [
    "load_signing_key",
    "sign_command",
    "verify_tree_report",
    "verify_wheel_report",
]


def load_signing_key(path: Path) -> PrivateKey:
    """Load a private key, asking for its passphrase only when it is encrypted."""
    try:
        head = path.read_bytes()[:200]
    except OSError as exc:
        raise ConfigError(f"cannot read private key {path}: {exc.strerror or exc}") from exc
    if b"ENCRYPTED" in head:
        return load_private_key(path, passphrase_from_env_or_prompt(confirm=False))
    return load_private_key(path)


def _refused(home: Home, report: VerificationReport, exc: VerificationError) -> None:
    AuditLog(home.audit_log).append(
        "plugin.verify",
        plugin=exc.data.get("plugin"),
        version=exc.data.get("version"),
        key_id=exc.data.get("key_id"),
        outcome="refused",
        detail=f"{report.target}: {exc.message}",
    )


def verify_wheel_report(
    home: Home,
    wheel: Path,
    *,
    installed_sequence: int | None = None,
    allow_older_sequence: bool = False,
    now: float | None = None,
) -> VerificationReport:
    """Verify a wheel against the home's trust store; refusals go to the audit log."""
    report = VerificationReport(target=str(wheel))
    try:
        verify_wheel_bytes(
            Path(wheel),
            TrustStore(home.keys_dir),
            installed_sequence=installed_sequence,
            allow_older_sequence=allow_older_sequence,
            now=now,
            report=report,
        )
    except VerificationError as exc:
        report.error = report.error or exc.message
        _refused(home, report, exc)
    return report


def verify_tree_report(
    home: Home,
    root: Path,
    *,
    dist_info: str | None = None,
    installed_sequence: int | None = None,
    now: float | None = None,
) -> VerificationReport:
    """Verify an installed plugin tree; refusals go to the audit log."""
    report = VerificationReport(target=str(root))
    try:
        verify_tree(
            Path(root),
            TrustStore(home.keys_dir),
            dist_info=dist_info,
            installed_sequence=installed_sequence,
            now=now,
            report=report,
        )
    except VerificationError as exc:
        report.error = report.error or exc.message
        _refused(home, report, exc)
    return report


@click.command("sign")
@click.argument("wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Private key file (from `mcphost keys generate`).",
)
@click.option(
    "--permissions",
    "permissions_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML file of what the plugin may do (default: nothing: no network, no files).",
)
@click.option(
    "--sequence",
    type=click.IntRange(min=0),
    help="Release sequence number (default: the current unix time).",
)
@click.option(
    "--expires-days",
    type=click.FloatRange(min=0, min_open=True),
    default=365.0,
    show_default=True,
    help="Days until the signature expires.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Output file or directory (default: replace WHEEL in place).",
)
@pass_home_to_create
def sign_command(
    home: Home,
    wheel: Path,
    key_file: Path,
    permissions_file: Path | None,
    sequence: int | None,
    expires_days: float,
    out: Path | None,
) -> None:
    """Sign WHEEL: embed a manifest of its files, entry points and permissions."""
    key = load_signing_key(key_file)
    permissions = load_permissions(permissions_file) if permissions_file else Permissions()
    signed = sign_wheel(
        wheel,
        key,
        permissions=permissions,
        sequence=sequence,
        expires_in=expires_days * 86400,
        out=out,
    )
    digest = hashlib.sha256(signed.read_bytes()).hexdigest()
    AuditLog(home.audit_log).append(
        "plugin.sign", key_id=key.key_id, hashes={str(signed): digest}, detail=str(signed)
    )
    click.echo(str(signed))
    click.echo(f"signed by {key.key_id}, sha256 {digest}", err=True)
