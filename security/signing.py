"""Signing a plugin wheel: build its manifest, sign it, write a new installable wheel.

The signed wheel is the original with two members added to its ``.dist-info``
directory, ``mcphost.manifest`` and ``mcphost.sig``, and RECORD rewritten to list them
(the manifest with its hash; RECORD and the signature without, as the wheel spec allows
for files that cannot hash themselves). It installs with plain ``pip install``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
import time
import zipfile
from pathlib import Path

from mcphost.sdk.errors import ConfigError, VerificationError
from mcphost.security.keys import PrivateKey
from mcphost.security.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    FileEntry,
    Manifest,
    SignatureFile,
    check_manifest,
    encode_manifest,
    encode_signature,
    signed_payload,
)
from mcphost.security.permissions import Permissions
from mcphost.security.wheel import RECORD_NAME, WheelArchive, record_hash, render_record

__all__ = ["DEFAULT_EXPIRY", "build_manifest", "sign_manifest", "sign_wheel"]

#: How long a signature stays valid unless the publisher says otherwise: 365 days.
DEFAULT_EXPIRY = 365 * 24 * 3600.0
_MAX_WHEEL_BYTES = 2 * 1024 * 1024 * 1024


def _unsigned_members(archive: WheelArchive) -> list[str]:
    """The members a manifest lists: all but RECORD and any earlier manifest or signature."""
    skip = {archive.dist_path(n) for n in (RECORD_NAME, MANIFEST_NAME, SIGNATURE_NAME)}
    return sorted(n for n in archive.infos if n not in skip)


def build_manifest(
    archive: WheelArchive,
    key: PrivateKey,
    *,
    permissions: Permissions,
    sequence: int | None = None,
    expires_in: float = DEFAULT_EXPIRY,
    now: float | None = None,
) -> Manifest:
    """The manifest for a wheel: every file's sha256 and size, entry points, permissions.

    ``sequence`` defaults to the issue time in unix seconds, so releases signed later get
    a higher sequence without the publisher keeping a counter.
    """
    issued = int(time.time() if now is None else now)
    if expires_in <= 0:
        raise ConfigError(f"expiry must be in the future, got {expires_in} seconds")
    files = []
    for name in _unsigned_members(archive):
        data = archive.read(name)
        files.append(FileEntry(path=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data)))
    manifest = Manifest(
        format=MANIFEST_FORMAT,
        name=archive.name,
        version=archive.version,
        sequence=issued if sequence is None else sequence,
        issued_at=issued,
        expires_at=issued + max(1, int(expires_in)),
        dist_info=archive.dist_info,
        entry_points=archive.entry_points(),
        permissions=permissions.validate(),
        files=files,
        key_id=key.key_id,
    )
    try:
        check_manifest(manifest)
    except VerificationError as exc:
        raise ConfigError(f"cannot sign {archive.source}: {exc.message}") from None
    return manifest


def sign_manifest(manifest: Manifest, key: PrivateKey) -> tuple[bytes, bytes]:
    """The canonical manifest bytes and the ``mcphost.sig`` bytes for them."""
    if manifest.key_id != key.key_id:
        raise ConfigError(
            f"manifest names key {manifest.key_id} but the signing key is {key.key_id}"
        )
    body = encode_manifest(manifest)
    signature = key.sign(signed_payload(body))
    sig = SignatureFile(
        format=1,
        algorithm="ed25519",
        key_id=key.key_id,
        signature=base64.b64encode(signature).decode("ascii"),
    )
    return body, encode_signature(sig)


def _copy_info(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    new = zipfile.ZipInfo(info.filename, date_time=info.date_time)
    new.external_attr = info.external_attr
    new.compress_type = zipfile.ZIP_DEFLATED
    return new


def _new_info(name: str, like: zipfile.ZipInfo) -> zipfile.ZipInfo:
    new = zipfile.ZipInfo(name, date_time=like.date_time)
    new.external_attr = 0o100644 << 16
    new.compress_type = zipfile.ZIP_DEFLATED
    return new


def sign_wheel(
    wheel: Path,
    key: PrivateKey,
    *,
    permissions: Permissions,
    sequence: int | None = None,
    expires_in: float = DEFAULT_EXPIRY,
    out: Path | None = None,
    now: float | None = None,
) -> Path:
    """Write a signed copy of ``wheel`` and return its path.

    ``out`` may be a ``.whl`` file path or a directory, created when missing (the wheel
    then keeps its file name, which pip needs). Without ``out`` the wheel is replaced in
    place, atomically. Signing an already signed wheel replaces its manifest and signature.
    """
    wheel = Path(wheel)
    try:
        if wheel.stat().st_size > _MAX_WHEEL_BYTES:
            raise ConfigError(f"wheel {wheel} is larger than {_MAX_WHEEL_BYTES} bytes")
        data = wheel.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read wheel {wheel}: {exc.strerror or exc}") from exc
    try:
        archive = WheelArchive(data, source=str(wheel))
    except VerificationError as exc:
        raise ConfigError(f"cannot sign: {exc.message}") from None
    manifest = build_manifest(
        archive, key, permissions=permissions, sequence=sequence, expires_in=expires_in, now=now
    )
    body, sig = sign_manifest(manifest, key)

    if out is None:
        target = wheel
    else:
        out = Path(out)
        # A wheel file name must end in .whl for pip; anything else names a directory.
        target = out / wheel.name if out.is_dir() or out.suffix != ".whl" else out
    target.parent.mkdir(parents=True, exist_ok=True)

    record_path = archive.dist_path(RECORD_NAME)
    manifest_path = archive.dist_path(MANIFEST_NAME)
    sig_path = archive.dist_path(SIGNATURE_NAME)
    rows: list[tuple[str, str, str]] = []
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zout:
            template = next(iter(archive.infos.values()))
            for name in _unsigned_members(archive):
                member = archive.read(name)
                zout.writestr(_copy_info(archive.infos[name]), member)
                rows.append((name, record_hash(member), str(len(member))))
            zout.writestr(_new_info(manifest_path, template), body)
            rows.append((manifest_path, record_hash(body), str(len(body))))
            zout.writestr(_new_info(sig_path, template), sig)
            rows.append((sig_path, "", ""))
            rows.append((record_path, "", ""))
            zout.writestr(_new_info(record_path, template), render_record(rows))
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
