"""Verification of a signed plugin: as wheel bytes before install, as a tree after.

Both follow the same order, and stop at the first failure of the first four steps:

1. the signature file names a key that is in the trust store and not revoked;
2. the Ed25519 signature over the domain-separated manifest bytes is valid (only then
   is the manifest parsed, so unauthenticated bytes are never decoded);
3. the manifest is canonical, well-formed, unexpired, and its sequence is not older
   than the installed one (rollback) unless the operator allows it;
4. the manifest belongs to this wheel: its name, version and dist-info directory match
   (a manifest taken from another wheel fails here or on the files);
5. file by file: every listed file is present with the listed size and sha256, and no
   unlisted file is present that could be imported. All files are checked, and every
   failure is reported.

Any failure raises :class:`VerificationError` whose ``data["reason"]`` tells the cases
apart and whose message names the file or key; the :class:`VerificationReport` holds
every check made.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcphost.sdk.errors import ConfigError, VerificationError
from mcphost.security.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    SIGNATURE_NAME,
    Manifest,
    decode_manifest,
    decode_signature,
    signed_payload,
)
from mcphost.security.report import VerificationReport
from mcphost.security.truststore import TrustStore
from mcphost.security.wheel import RECORD_NAME, WheelArchive, parse_entry_points, record_hash

__all__ = [
    "IMPORTABLE_SUFFIXES",
    "REINSTALL_ADVICE",
    "VerifiedWheel",
    "is_importable",
    "verify_tree",
    "verify_wheel_bytes",
]

#: File name endings Python (or a loader it calls) can execute from a plugin tree.
IMPORTABLE_SUFFIXES = (
    ".py",
    ".pyc",
    ".pyo",
    ".pyw",
    ".pyd",
    ".so",
    ".pth",
    ".dll",
    ".dylib",
    ".egg",
    ".whl",
    ".zip",
    ".egg-link",
)
#: How a refusal of changed files ends; a caller that knows better advice replaces it.
REINSTALL_ADVICE = "Reinstall the plugin from its signed wheel"
#: Files pip writes into an installed dist-info directory; they are not signed.
_INSTALLER_FILES = frozenset({RECORD_NAME, "INSTALLER", "REQUESTED", "direct_url.json"})
_MAX_WHEEL_BYTES = 2 * 1024 * 1024 * 1024
_MAX_REPORTED = 50


def is_importable(path: str) -> bool:
    """Whether a file at ``path`` could be imported or loaded as code."""
    name = path.rsplit("/", 1)[-1].lower()
    return name.endswith(IMPORTABLE_SUFFIXES) or ".so." in name or "__pycache__" in path.split("/")


@dataclass
class VerifiedWheel:
    """A wheel that verified: its manifest and exactly the bytes that were checked."""

    manifest: Manifest
    key_id: str
    #: Archive path -> bytes, for every listed file plus the manifest, signature, RECORD.
    members: dict[str, bytes]
    report: VerificationReport
    manifest_bytes: bytes = b""
    signature_bytes: bytes = b""
    dist_info: str = ""


def _refuse(
    report: VerificationReport, reason: str, message: str, **data: Any
) -> VerificationError:
    report.error = message
    report.reason = reason
    payload: dict[str, Any] = {"reason": reason, "target": report.target, **data}
    failed = report.failures()[:_MAX_REPORTED]
    payload["failed"] = [[c.check, c.subject, c.detail] for c in failed]
    return VerificationError(message, data=payload)


def _record_error(
    report: VerificationReport, exc: VerificationError, check: str, subject: str
) -> VerificationError:
    """Put an error raised by a lower layer into the report and return it, enriched."""
    report.add(check, subject, False, exc.message)
    reason = str(exc.data.get("reason", "verification_failed"))
    return _refuse(
        report, reason, exc.message, **{k: v for k, v in exc.data.items() if k != "reason"}
    )


def _authenticate(
    manifest_bytes: bytes, sig_bytes: bytes, trust: TrustStore, report: VerificationReport
) -> Manifest:
    """Steps 1-2 and parsing: trusted key, valid signature, then the manifest itself."""
    try:
        sig = decode_signature(sig_bytes)
    except VerificationError as exc:
        raise _record_error(report, exc, "signature", SIGNATURE_NAME) from None
    try:
        key = trust.require(sig.key_id)
    except VerificationError as exc:
        raise _record_error(report, exc, "key", sig.key_id) from None
    except ConfigError as exc:
        report.add("key", sig.key_id, False, exc.message)
        raise _refuse(report, "trust_store", exc.message, key_id=sig.key_id) from None
    report.add("key", sig.key_id, True, "trusted, not revoked")
    try:
        raw = base64.b64decode(sig.signature, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 64 or not key.verify(raw, signed_payload(manifest_bytes)):
        what = "is not valid" if len(raw) == 64 else f"is {len(raw)} bytes, not 64"
        report.add("signature", sig.key_id, False, f"signature {what}")
        raise _refuse(
            report,
            "bad_signature",
            f"{report.target}: the manifest signature by key {sig.key_id} {what}; "
            "the manifest or signature was altered. Get the plugin again from its "
            "publisher",
            key_id=sig.key_id,
        )
    report.add("signature", sig.key_id, True, "Ed25519 signature over the manifest is valid")
    try:
        manifest = decode_manifest(manifest_bytes)
    except VerificationError as exc:
        raise _record_error(report, exc, "manifest", MANIFEST_NAME) from None
    if manifest.key_id != sig.key_id:
        report.add("manifest", MANIFEST_NAME, False, "names another key than the signature")
        raise _refuse(
            report,
            "bad_manifest",
            f"{report.target}: manifest names key {manifest.key_id} but was signed "
            f"by {sig.key_id}; re-sign the plugin",
            key_id=sig.key_id,
        )
    report.add(
        "manifest",
        MANIFEST_NAME,
        True,
        f"{manifest.name} {manifest.version}, sequence {manifest.sequence}, "
        f"{len(manifest.files)} files",
    )
    return manifest


def _check_fresh(
    manifest: Manifest,
    report: VerificationReport,
    *,
    now: float | None,
    installed_sequence: int | None,
    allow_older_sequence: bool,
) -> None:
    plugin = f"{manifest.name} {manifest.version}"
    current = time.time() if now is None else now
    if current >= manifest.expires_at:
        report.add("expiry", plugin, False, f"expired at unix time {manifest.expires_at}")
        raise _refuse(
            report,
            "expired",
            f"the signature of plugin {plugin} expired at unix time "
            f"{manifest.expires_at}; ask the publisher for a freshly signed wheel",
            plugin=manifest.name,
            version=manifest.version,
        )
    report.add("expiry", plugin, True, f"valid until unix time {manifest.expires_at}")
    if installed_sequence is None:
        return
    if manifest.sequence < installed_sequence:
        if not allow_older_sequence:
            report.add(
                "sequence",
                plugin,
                False,
                f"sequence {manifest.sequence} < installed {installed_sequence}",
            )
            raise _refuse(
                report,
                "rollback",
                f"plugin {plugin} has sequence {manifest.sequence}, older than "
                f"the installed sequence {installed_sequence}: refusing a rollback. "
                "To go back on purpose, use the rollback command",
                plugin=manifest.name,
                version=manifest.version,
            )
        report.add(
            "sequence",
            plugin,
            True,
            f"sequence {manifest.sequence} < installed {installed_sequence}, allowed",
        )
    else:
        report.add(
            "sequence",
            plugin,
            True,
            f"sequence {manifest.sequence} >= installed {installed_sequence}",
        )


def _check_identity(
    manifest: Manifest,
    report: VerificationReport,
    *,
    dist_info: str,
    name: str | None,
    version: str | None,
) -> None:
    problems = []
    if manifest.dist_info != dist_info:
        problems.append(f"dist-info {manifest.dist_info!r} is not {dist_info!r}")
    if name is not None and manifest.name != name:
        problems.append(f"name {manifest.name!r} is not {name!r}")
    if version is not None and manifest.version != version:
        problems.append(f"version {manifest.version!r} is not {version!r}")
    plugin = f"{manifest.name} {manifest.version}"
    if problems:
        report.add("identity", plugin, False, "; ".join(problems))
        raise _refuse(
            report,
            "identity_mismatch",
            f"{report.target}: the signed manifest is for another wheel "
            f"({'; '.join(problems)}); refusing a mixed-up manifest",
            plugin=manifest.name,
            version=manifest.version,
        )
    report.add("identity", plugin, True, "manifest matches this wheel's name and version")


def _file_failures(manifest: Manifest, report: VerificationReport) -> None:
    failed = report.failures()
    if not failed:
        return
    plugin = f"{manifest.name} {manifest.version}"
    reasons = {c.check for c in failed}
    if "link" in reasons:
        reason = "link"
    elif "special" in reasons:
        reason = "special_file"
    elif reasons == {"unlisted"}:
        reason = "unlisted_file"
    else:
        reason = "file_mismatch"
    listed = ", ".join(f"{c.subject} ({c.detail})" for c in failed[:5])
    more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
    raise _refuse(
        report,
        reason,
        f"plugin {plugin}: {len(failed)} file check(s) failed in {report.target}: "
        f"{listed}{more}. {REINSTALL_ADVICE}",
        plugin=manifest.name,
        version=manifest.version,
        files=[c.subject for c in failed[:_MAX_REPORTED]],
    )


# -- wheel --------------------------------------------------------------------------


def verify_wheel_bytes(
    data: bytes | Path,
    trust: TrustStore,
    *,
    installed_sequence: int | None = None,
    allow_older_sequence: bool = False,
    now: float | None = None,
    report: VerificationReport | None = None,
    source: str | None = None,
) -> VerifiedWheel:
    """Verify a signed wheel (bytes or a file) before it is installed.

    Pass ``report`` to keep the checks even when a :class:`VerificationError` is raised,
    and ``source`` to name the wheel given as bytes in messages.
    """
    if isinstance(data, Path):
        source = str(data)
        try:
            if data.stat().st_size > _MAX_WHEEL_BYTES:
                raise VerificationError(
                    f"wheel {data} is over {_MAX_WHEEL_BYTES} bytes", data={"reason": "bad_wheel"}
                )
            data = data.read_bytes()
        except OSError as exc:
            raise VerificationError(
                f"cannot read wheel {source}: {exc.strerror or exc}", data={"reason": "bad_wheel"}
            ) from exc
    elif source is None:
        source = "wheel"
    if report is None:
        report = VerificationReport(target=source)
    else:
        report.target = source
    try:
        archive = WheelArchive(data, source=source)
    except VerificationError as exc:
        raise _record_error(report, exc, "archive", source) from None
    manifest_path = archive.dist_path(MANIFEST_NAME)
    sig_path = archive.dist_path(SIGNATURE_NAME)
    if not (archive.has(manifest_path) and archive.has(sig_path)):
        report.add("signature", sig_path, False, "wheel carries no mcphost signature")
        raise _refuse(
            report,
            "unsigned",
            f"{source} ({archive.name} {archive.version}) is not signed: it has no "
            f"{MANIFEST_NAME} and {SIGNATURE_NAME}. Sign it with "
            "`mcphost plugin sign`",
            plugin=archive.name,
            version=archive.version,
        )
    try:
        sig_bytes = archive.read(sig_path, limit=MAX_SIGNATURE_BYTES)
        manifest_bytes = archive.read(manifest_path, limit=MAX_MANIFEST_BYTES)
    except VerificationError as exc:
        raise _record_error(report, exc, "manifest", manifest_path) from None
    manifest = _authenticate(manifest_bytes, sig_bytes, trust, report)
    _check_fresh(
        manifest,
        report,
        now=now,
        installed_sequence=installed_sequence,
        allow_older_sequence=allow_older_sequence,
    )
    _check_identity(
        manifest, report, dist_info=archive.dist_info, name=archive.name, version=archive.version
    )

    members: dict[str, bytes] = {manifest_path: manifest_bytes, sig_path: sig_bytes}
    listed = set()
    for entry in manifest.files:
        listed.add(entry.path)
        if not archive.has(entry.path):
            report.add("file", entry.path, False, "listed in the manifest but missing")
            continue
        declared = archive.size(entry.path)
        if declared != entry.size:
            report.add("file", entry.path, False, f"size {declared}, signed {entry.size}")
            continue
        try:
            content = archive.read(entry.path, limit=entry.size)
        except VerificationError as exc:
            report.add("file", entry.path, False, exc.message)
            continue
        if hashlib.sha256(content).hexdigest() != entry.sha256:
            report.add("file", entry.path, False, "sha256 differs from the signed manifest")
            continue
        report.add("file", entry.path, True, f"sha256 ok, {entry.size} bytes")
        members[entry.path] = content
    record_path = archive.dist_path(RECORD_NAME)
    for name in archive.infos:
        if name in listed or name in (manifest_path, sig_path, record_path):
            continue
        report.add("unlisted", name, False, "in the wheel but not in the signed manifest")
    if archive.has(record_path):
        _check_record(archive, record_path, members, report)
    _check_entry_points(manifest, archive, members, report)
    _file_failures(manifest, report)
    return VerifiedWheel(
        manifest=manifest,
        key_id=manifest.key_id,
        members=members,
        report=report,
        manifest_bytes=manifest_bytes,
        signature_bytes=sig_bytes,
        dist_info=archive.dist_info,
    )


def _check_entry_points(
    manifest: Manifest,
    archive: WheelArchive,
    members: dict[str, bytes],
    report: VerificationReport,
) -> None:
    """The manifest's entry points must be the ones the wheel's own metadata declares."""
    path = archive.dist_path("entry_points.txt")
    if path not in members and archive.has(path):
        return  # the file failed its own check, which is reported already
    text = members[path].decode("utf-8", "replace") if path in members else ""
    declared = parse_entry_points(text, source=path) if text else {}
    if declared != manifest.entry_points:
        report.add("entry_points", path, False, "differ from the signed manifest's")
    else:
        report.add("entry_points", path, True, "match the signed manifest")


def _check_record(
    archive: WheelArchive, record_path: str, members: dict[str, bytes], report: VerificationReport
) -> None:
    """RECORD is not signed, but it must not contradict what was verified."""
    try:
        data = archive.read(record_path, limit=MAX_MANIFEST_BYTES)
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    except (VerificationError, UnicodeDecodeError, csv.Error) as exc:
        report.add("record", record_path, False, f"unreadable: {exc}")
        return
    # Files that failed their own check are reported already; RECORD must agree on the rest.
    bad = [
        row[0]
        for row in rows
        if len(row) >= 2
        and row[1]
        and (
            row[0] not in archive.infos
            or (row[0] in members and record_hash(members[row[0]]) != row[1])
        )
    ]
    if bad:
        report.add(
            "record",
            record_path,
            False,
            f"disagrees with the signed manifest on {', '.join(bad[:5])}",
        )
        return
    members[record_path] = data
    report.add("record", record_path, True, "agrees with the signed manifest")


# -- installed tree -----------------------------------------------------------------


def _read_regular(path: Path, limit: int) -> tuple[bytes, os.stat_result]:
    """Read a regular, single-linked, non-symlink file of at most ``limit`` bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return b"", st
        chunks = []
        remaining = st.st_size + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def _walk(root: Path, report: VerificationReport) -> dict[str, str]:
    """Relative path -> absolute path of every regular file; links and specials reported."""
    found: dict[str, str] = {}
    stack = [("", str(root))]
    while stack:
        rel_dir, abs_dir = stack.pop()
        with os.scandir(abs_dir) as it:
            for entry in it:
                rel = f"{rel_dir}{entry.name}"
                if entry.is_symlink():
                    report.add("link", rel, False, "symlinks are refused in a plugin tree")
                elif entry.is_dir(follow_symlinks=False):
                    stack.append((rel + "/", entry.path))
                elif entry.is_file(follow_symlinks=False):
                    found[rel] = entry.path
                else:
                    report.add("special", rel, False, "not a regular file or directory")
    return found


def _tree_path(path: str, dist_info: str) -> str | None:
    """Where pip puts a wheel member in a ``--target`` tree; ``None``: outside the tree."""
    head, sep, rest = path.partition("/")
    if head.endswith(".data") and sep:
        scheme, sep2, sub = rest.partition("/")
        if scheme in ("purelib", "platlib", "data") and sep2:
            return sub
        return None
    return path


def verify_tree(
    root: Path,
    trust: TrustStore,
    *,
    dist_info: str | None = None,
    installed_sequence: int | None = None,
    allow_older_sequence: bool = False,
    now: float | None = None,
    strict: bool = False,
    report: VerificationReport | None = None,
) -> Manifest:
    """Verify an installed plugin tree (``pip install --target root --no-compile``).

    The manifest and signature are read from ``root/<dist_info>/`` (found when only one
    dist-info directory there holds a manifest). Symlinks, hard-linked files and special
    files anywhere in the tree are refused; so is any unlisted importable file, including
    bytecode in ``__pycache__``; with ``strict`` any unlisted file at all except what the
    installer writes into the dist-info directory.
    """
    root = Path(root)
    if report is None:
        report = VerificationReport(target=str(root))
    else:
        report.target = str(root)
    try:
        st = os.lstat(root)
    except OSError as exc:
        report.add("tree", str(root), False, str(exc.strerror or exc))
        raise _refuse(
            report, "missing_tree", f"plugin tree {root} cannot be read: {exc.strerror or exc}"
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        report.add("tree", str(root), False, "not a directory (or a symlink)")
        raise _refuse(report, "link", f"plugin tree {root} is not a real directory")
    if dist_info is not None and (
        "/" in dist_info or dist_info in (".", "..") or not dist_info.endswith(".dist-info")
    ):
        raise ValueError(f"dist_info must be a .dist-info directory name, not {dist_info!r}")
    if dist_info is None:
        candidates = sorted(
            p.name for p in root.glob("*.dist-info") if (p / MANIFEST_NAME).exists()
        )
        if len(candidates) != 1:
            report.add(
                "manifest",
                str(root),
                False,
                f"{len(candidates)} dist-info directories hold a manifest",
            )
            raise _refuse(
                report,
                "unsigned",
                f"plugin tree {root} has {len(candidates)} signed dist-info "
                f"directories ({', '.join(candidates) or 'none'}); expected one. "
                "Install the plugin from a signed wheel",
            )
        dist_info = candidates[0]
    manifest_file = root / dist_info / MANIFEST_NAME
    sig_file = root / dist_info / SIGNATURE_NAME
    blobs = []
    for path, limit in ((manifest_file, MAX_MANIFEST_BYTES), (sig_file, MAX_SIGNATURE_BYTES)):
        member = f"{dist_info}/{path.name}"
        try:
            blob, fst = _read_regular(path, limit)
        except OSError as exc:
            report.add("manifest", member, False, str(exc.strerror or exc))
            raise _refuse(
                report,
                "unsigned",
                f"plugin tree {root}: cannot read {member} ({exc.strerror or exc}); "
                "install the plugin from a signed wheel",
                file=member,
            ) from None
        if not stat.S_ISREG(fst.st_mode) or fst.st_nlink != 1 or fst.st_size > limit:
            report.add("manifest", member, False, "not a single-linked regular file within cap")
            raise _refuse(
                report,
                "bad_manifest",
                f"plugin tree {root}: {member} is not a regular file of at most "
                f"{limit} bytes with one link",
                file=member,
            )
        blobs.append(blob)
    manifest = _authenticate(blobs[0], blobs[1], trust, report)
    _check_fresh(
        manifest,
        report,
        now=now,
        installed_sequence=installed_sequence,
        allow_older_sequence=allow_older_sequence,
    )
    _check_identity(manifest, report, dist_info=dist_info, name=None, version=None)

    try:
        found = _walk(root, report)
    except OSError as exc:
        report.add("tree", str(root), False, str(exc))
        raise _refuse(
            report, "missing_tree", f"plugin tree {root} cannot be walked: {exc}"
        ) from None
    covered = {f"{dist_info}/{MANIFEST_NAME}", f"{dist_info}/{SIGNATURE_NAME}"}
    # A listed file that is a link or special file is reported as that, not also missing.
    not_regular = {c.subject for c in report.checks if c.check in ("link", "special")}
    for entry in manifest.files:
        rel = _tree_path(entry.path, dist_info)
        if rel is None:
            report.add("file", entry.path, True, "installed outside the plugin tree; skipped")
            continue
        covered.add(rel)
        abs_path = found.get(rel)
        if abs_path is None:
            if rel not in not_regular:
                report.add("file", rel, False, "listed in the manifest but missing")
            continue
        try:
            content, fst = _read_regular(Path(abs_path), entry.size)
        except OSError as exc:
            report.add("file", rel, False, f"cannot read: {exc.strerror or exc}")
            continue
        if not stat.S_ISREG(fst.st_mode):
            report.add("special", rel, False, "not a regular file")
        elif fst.st_nlink != 1:
            report.add("link", rel, False, f"has {fst.st_nlink} hard links; refused")
        elif fst.st_size != entry.size or len(content) != entry.size:
            report.add("file", rel, False, f"size {fst.st_size}, signed {entry.size}")
        elif hashlib.sha256(content).hexdigest() != entry.sha256:
            report.add("file", rel, False, "sha256 differs from the signed manifest")
        else:
            report.add("file", rel, True, f"sha256 ok, {entry.size} bytes")
    for rel in sorted(found.keys() - covered):
        if is_importable(rel):
            report.add("unlisted", rel, False, "importable file not in the signed manifest")
        elif rel.startswith(f"{dist_info}/") and rel.split("/", 1)[1] in _INSTALLER_FILES:
            report.add("unlisted", rel, True, "written by the installer; not signed")
        elif strict:
            report.add("unlisted", rel, False, "file not in the signed manifest")
        else:
            report.add("unlisted", rel, True, "not importable; not covered by the signature")
    _file_failures(manifest, report)
    return manifest
