"""Verification before every worker start, against the trust store as it is now.

A registry version is checked as a whole tree: signature, every listed file, and no
unlisted importable file. A plugin found in an environment or a directory shares its
tree with other distributions, so there every signed file must match but files that
belong to others are not held against it. Unsigned plugins run only when the
configuration says ``allow_unsigned = true``, with a warning each time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn

from mcphost.sdk.errors import MCPHostError, RegistryError, VerificationError
from mcphost.security.audit import AuditLog
from mcphost.security.report import VerificationReport
from mcphost.security.truststore import TrustStore
from mcphost.security.verify import REINSTALL_ADVICE, verify_tree

from .config import HostConfig
from .home import Home
from .sources import PluginSource

__all__ = ["UNSIGNED_WARNING", "Verifier", "make_verifier", "verify_source"]

log = logging.getLogger("mcphost.verification")
#: The attribute that marks the log record of an unsigned plugin's warning (its value:
#: the plugin's name), for a command that has said so already.
UNSIGNED_WARNING = "mcphost_unsigned_plugin"

Verifier = Callable[[PluginSource], Awaitable[None]]


def verify_source(
    home: Home,
    config: HostConfig,
    source: PluginSource,
    report: VerificationReport | None = None,
    *,
    action: str = "plugin.start",
) -> VerificationReport:
    """Check ``source``'s files against its signed manifest; raise VerificationError.

    Returns the report (empty of checks for an unsigned plugin that is allowed); pass
    ``report`` to keep the checks when it raises. A refusal goes to the audit log under
    ``action`` (what the check was for: a start, a swap, an operator's verify).
    """
    if not source.root:
        raise VerificationError(
            f"plugin {source.label} has no installed tree to verify; reinstall it",
            data={"plugin": source.name, "version": source.version, "reason": "missing_tree"},
        )
    root = Path(source.root)
    dist_info = Path(source.dist_info).name if source.dist_info else None
    report = report if report is not None else VerificationReport(target=str(root))
    _verify_tree(home, config, source, root, dist_info, report, action)
    if source.origin == "registry":
        _verify_dependencies(home, source, report, action)
    return report


def _verify_tree(
    home: Home,
    config: HostConfig,
    source: PluginSource,
    root: Path,
    dist_info: str | None,
    report: VerificationReport,
    action: str,
) -> None:
    try:
        verify_tree(root, TrustStore(home.keys_dir), dist_info=dist_info, report=report)
    except VerificationError as exc:
        reason = exc.data.get("reason")
        if reason == "unsigned":
            if config.allow_unsigned:
                log.warning(
                    "plugin %s is not signed; running it only because allow_unsigned = true",
                    source.label,
                    extra={UNSIGNED_WARNING: source.name},
                )
                return
            raise VerificationError(
                f"plugin {source.label} ({source.origin}, {root}) is not signed, and the "
                "configuration does not allow unsigned plugins; sign it with `mcphost plugin "
                "sign`, or set allow_unsigned = true in config.toml for plugin development",
                data={"plugin": source.name, "version": source.version, "reason": "unsigned"},
            ) from None
        shared = source.origin in ("environment", "directory")
        if shared and _only_others_files(report, dist_info):
            return
        refused = _refusal(home, source, exc)
        if shared and any("__pycache__" in c.subject.split("/") for c in report.failures()):
            refused.message += BYTECODE_ADVICE
            refused.args = (refused.message,)
        report.error = refused.message
        _audit(home, source, refused, action)
        raise refused from None


def _only_others_files(report: VerificationReport, dist_info: str | None) -> bool:
    """Whether every failure of a tree in a shared directory (a site-packages, a pip
    ``--target``) is an unlisted file of another distribution there.

    Inside the plugin's own top-level packages any unlisted importable file is refused,
    bytecode in ``__pycache__`` included: Python would run it instead of the verified
    source, so such a plugin must be installed with ``pip install --no-compile``.
    """
    failures = report.failures()
    if not failures or any(c.check != "unlisted" for c in failures):
        return False
    own = _own_packages(report, dist_info)
    return not any(c.subject.split("/", 1)[0] in own for c in failures)


def _own_packages(report: VerificationReport, dist_info: str | None) -> set[str]:
    """The top-level directories that hold files the plugin's manifest lists."""
    return {
        c.subject.split("/", 1)[0]
        for c in report.checks
        if c.check == "file" and "/" in c.subject and not c.subject.startswith(f"{dist_info}/")
    }


BYTECODE_ADVICE = (
    "; bytecode is not covered by the signature: install the plugin with "
    "`pip install --no-compile`, or delete its __pycache__ directories"
)


def _refusal(home: Home, source: PluginSource, exc: VerificationError) -> VerificationError:
    """The error a refused start raises: it names the plugin as the host knows it (the
    manifest names the distribution) and, for a registry version, says how to restore it."""
    message = exc.message
    distribution = exc.data.get("plugin")
    for prefix in (f"plugin {distribution} {source.version}: ", f"plugin {source.label}: "):
        message = message.removeprefix(prefix)
    message = f"plugin {source.label}: {message}"
    if source.origin == "registry" and message.endswith(REINSTALL_ADVICE):
        message = message.removesuffix(REINSTALL_ADVICE) + _restore_advice(home, source)
    data = {**exc.data, "plugin": source.name, "version": source.version}
    if distribution and distribution != source.name:
        data["distribution"] = distribution
    return VerificationError(message, data=data)


def _restore_advice(home: Home, source: PluginSource) -> str:
    """How to put back the files of an installed version: install its wheel again."""
    from .registry_link import open_reader

    wheel = "WHEEL"
    reg = open_reader(home)
    if reg is not None:
        with reg:
            try:
                sha = reg.version(source.name, source.version).wheel_sha256
            except MCPHostError:
                sha = ""
        stored = home.store_dir / f"{sha}.whl"
        if sha and stored.exists():
            wheel = str(stored)
    return (
        f"To restore its signed files, install its wheel again: `mcphost plugin install "
        f"--yes {wheel}` (the registry keeps a copy in {home.store_dir})"
    )


def _verify_dependencies(
    home: Home, source: PluginSource, report: VerificationReport, action: str
) -> None:
    """A registry version's dependencies against the hashes recorded at install. When
    that record cannot be read (no registry, the version gone from it), the start is
    refused: no version starts with its dependencies unchecked."""
    from .registry_link import open_reader

    subject = f"{source.label} dependencies"
    reg = open_reader(home)
    try:
        if reg is None:
            raise RegistryError(f"there is no registry in {home.root}")
        with reg:
            recorded = reg.version(source.name, source.version).deps_files is not None
            changes = reg.dependency_changes(source.name, source.version)
    except MCPHostError as exc:
        report.add("dependencies", subject, False, exc.message)
        _refuse_dependencies(
            home,
            source,
            report,
            action,
            f"plugin {source.label}: its dependencies cannot be checked ({exc.message}); "
            "install its wheel again with `mcphost plugin install`",
            "dependencies_unknown",
        )
    if not changes:
        detail = "as installed" if recorded else "no hashes recorded at install to check"
        report.add("dependencies", subject, True, detail)
        return
    report.add("dependencies", subject, False, "; ".join(changes[:5]))
    _refuse_dependencies(
        home,
        source,
        report,
        action,
        f"plugin {source.label}: its installed dependencies changed since install: "
        f"{', '.join(changes[:5])}{' and more' if len(changes) > 5 else ''}. "
        + _restore_advice(home, source),
        "dependency_changed",
    )


def _refuse_dependencies(
    home: Home,
    source: PluginSource,
    report: VerificationReport,
    action: str,
    message: str,
    reason: str,
) -> NoReturn:
    exc = VerificationError(
        message, data={"plugin": source.name, "version": source.version, "reason": reason}
    )
    report.error, report.reason = exc.message, reason
    _audit(home, source, exc, action)
    raise exc


def _audit(home: Home, source: PluginSource, exc: VerificationError, action: str) -> None:
    try:
        AuditLog(home.audit_log).append(
            action,
            plugin=source.name,
            version=source.version,
            key_id=exc.data.get("key_id") or source.key_id,
            outcome="refused",
            detail=exc.message,
        )
    except Exception:  # the refusal itself must reach the caller even if logging fails
        log.exception("cannot write the audit log")


def make_verifier(home: Home, config: HostConfig) -> Verifier:
    """The check a host runs before each worker start (in a thread: it hashes files)."""

    async def verify(source: PluginSource) -> None:
        await asyncio.to_thread(verify_source, home, config, source)

    return verify
