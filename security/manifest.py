"""The signed manifest of a plugin wheel, its canonical bytes, and the signature file.

A manifest names the plugin (distribution name and version), a monotonically growing
``sequence``, when it was issued and when it expires, the entry points, the declared
permissions, and the sha256 and size of every file in the wheel. It travels inside the
wheel as ``<dist-info>/mcphost.manifest``: canonical JSON (struct fields and mapping keys
sorted, no whitespace, files sorted by path). A signature is made over
``MANIFEST_DOMAIN + manifest bytes`` so it can never be confused with a signature over
any other kind of message, and it sits beside the manifest in ``mcphost.sig``.

Decoding refuses anything that is not exactly the canonical encoding, anything over the
size caps, and any unknown field: one manifest has one byte form, and one signature.
"""

from __future__ import annotations

import re

import msgspec
from packaging.version import InvalidVersion, Version

from mcphost.sdk.errors import VerificationError
from mcphost.security.permissions import Permissions

__all__ = [
    "MANIFEST_DOMAIN",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "MAX_FILES",
    "MAX_FILE_SIZE",
    "MAX_MANIFEST_BYTES",
    "MAX_SIGNATURE_BYTES",
    "MAX_TOTAL_SIZE",
    "SIGNATURE_NAME",
    "FileEntry",
    "Manifest",
    "SignatureFile",
    "check_manifest",
    "check_member_path",
    "decode_manifest",
    "decode_signature",
    "encode_manifest",
    "encode_signature",
    "signed_payload",
]

MANIFEST_FORMAT = 1
#: Prefixed to the manifest bytes before signing (domain separation).
MANIFEST_DOMAIN = b"mcphost-manifest-v1\x00"
#: File names inside the wheel's ``.dist-info`` directory.
MANIFEST_NAME = "mcphost.manifest"
SIGNATURE_NAME = "mcphost.sig"

#: Caps against endless data: a manifest or wheel beyond these is refused unread.
MAX_MANIFEST_BYTES = 8 * 1024 * 1024
MAX_SIGNATURE_BYTES = 4096
MAX_FILES = 20_000
MAX_FILE_SIZE = 512 * 1024 * 1024
MAX_TOTAL_SIZE = 2 * 1024 * 1024 * 1024
_MAX_ENTRY_POINTS = 1024
_MAX_PATH = 1024

_ENCODER = msgspec.json.Encoder(order="sorted")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"ed25519:[0-9a-f]{16}")
_DIST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,198}[A-Za-z0-9])?")


class FileEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One file of the wheel: its archive path, sha256 (hex) and size in bytes."""

    path: str
    sha256: str
    size: int


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a publisher's key vouches for: one plugin version, file by file."""

    format: int
    #: Distribution name and version, as in the wheel's METADATA.
    name: str
    version: str
    #: Grows with every release of this plugin; a lower one than installed is a rollback.
    sequence: int
    #: Unix seconds.
    issued_at: int
    expires_at: int
    #: The wheel's ``name-version.dist-info`` directory, which holds the manifest.
    dist_info: str
    #: Entry-point group -> name -> value, from the wheel's ``entry_points.txt``.
    entry_points: dict[str, dict[str, str]]
    permissions: Permissions
    #: Every file of the wheel except RECORD, the manifest and the signature; by path.
    files: list[FileEntry]
    #: The key that signs this manifest.
    key_id: str


class SignatureFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The contents of ``mcphost.sig``: which key signed, and the signature (base64)."""

    format: int
    algorithm: str
    key_id: str
    signature: str


def _fail(message: str, **data: str) -> VerificationError:
    return VerificationError(message, data={"reason": "bad_manifest", **data})


def encode_manifest(manifest: Manifest) -> bytes:
    """The canonical bytes of a manifest (what is signed and stored)."""
    return _ENCODER.encode(manifest)


def signed_payload(manifest_bytes: bytes) -> bytes:
    """The exact bytes a manifest signature covers."""
    return MANIFEST_DOMAIN + manifest_bytes


def check_member_path(path: str) -> str | None:
    """Why ``path`` is not a safe relative archive path, or ``None`` when it is."""
    if not path or len(path) > _MAX_PATH:
        return "empty or too long"
    if "\\" in path or "\x00" in path or path.startswith("/") or ":" in path.split("/")[0]:
        return "absolute, or has a backslash or NUL"
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "has an empty, '.' or '..' component"
    return None


def check_manifest(m: Manifest) -> None:
    """Check a decoded manifest's fields; raise :class:`VerificationError` on the first bad one."""
    where = f"manifest of {m.name!r} {m.version!r}"
    if m.format != MANIFEST_FORMAT:
        raise _fail(
            f"{where} has format {m.format}; this mcphost reads format "
            f"{MANIFEST_FORMAT}. Upgrade mcphost or re-sign the plugin"
        )
    if not _DIST_NAME.fullmatch(m.name):
        raise _fail(f"manifest names plugin {m.name!r}, which is not a distribution name")
    try:
        Version(m.version)
    except InvalidVersion:
        raise _fail(f"{where}: version is not a valid version") from None
    if not 0 <= m.sequence < 2**63:
        raise _fail(f"{where}: sequence {m.sequence} is out of range")
    if not 0 <= m.issued_at < m.expires_at < 2**63:
        raise _fail(f"{where}: expires_at must come after issued_at")
    if (
        not m.dist_info.endswith(".dist-info")
        or check_member_path(m.dist_info)
        or "/" in m.dist_info
    ):
        raise _fail(f"{where}: dist_info {m.dist_info!r} is not a .dist-info directory name")
    if not _KEY_ID.fullmatch(m.key_id):
        raise _fail(f"{where}: key_id {m.key_id!r} is not a key id")
    if sum(len(v) for v in m.entry_points.values()) > _MAX_ENTRY_POINTS:
        raise _fail(f"{where} declares more than {_MAX_ENTRY_POINTS} entry points")
    m.permissions.validate(where)
    if len(m.files) > MAX_FILES:
        raise _fail(f"{where} lists {len(m.files)} files; at most {MAX_FILES} are allowed")
    total = 0
    previous = ""
    for f in m.files:
        why = check_member_path(f.path)
        if why is not None:
            raise _fail(f"{where}: file path {f.path!r} is {why}", file=f.path)
        if f.path <= previous:
            raise _fail(f"{where}: files are not sorted or {f.path!r} is listed twice", file=f.path)
        previous = f.path
        if not _SHA256.fullmatch(f.sha256):
            raise _fail(
                f"{where}: sha256 of {f.path!r} is not 64 lowercase hex digits", file=f.path
            )
        if not 0 <= f.size <= MAX_FILE_SIZE:
            raise _fail(f"{where}: size of {f.path!r} is out of range", file=f.path)
        total += f.size
    if total > MAX_TOTAL_SIZE:
        raise _fail(f"{where}: files add up to {total} bytes, over {MAX_TOTAL_SIZE}")


def decode_manifest(data: bytes) -> Manifest:
    """Decode and check canonical manifest bytes; anything else is a VerificationError."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise _fail(
            f"manifest is {len(data)} bytes, over the {MAX_MANIFEST_BYTES} byte cap; "
            "it is refused unread"
        )
    try:
        manifest = msgspec.json.decode(data, type=Manifest)
    except msgspec.DecodeError as exc:
        raise _fail(f"manifest is malformed: {exc}") from None
    if encode_manifest(manifest) != data:
        raise _fail(
            f"manifest of {manifest.name!r} {manifest.version!r} is not in canonical "
            "form; re-sign the plugin with `mcphost plugin sign`"
        )
    check_manifest(manifest)
    return manifest


def encode_signature(sig: SignatureFile) -> bytes:
    return _ENCODER.encode(sig) + b"\n"


def decode_signature(data: bytes) -> SignatureFile:
    """Decode ``mcphost.sig`` (size-capped); the signature itself is checked elsewhere."""
    if len(data) > MAX_SIGNATURE_BYTES:
        raise VerificationError(
            f"signature file is {len(data)} bytes, over the {MAX_SIGNATURE_BYTES} byte cap",
            data={"reason": "bad_signature"},
        )
    try:
        sig = msgspec.json.decode(data, type=SignatureFile)
    except msgspec.DecodeError as exc:
        raise VerificationError(
            f"signature file is malformed: {exc}", data={"reason": "bad_signature"}
        ) from None
    if sig.format != 1 or sig.algorithm != "ed25519":
        raise VerificationError(
            f"signature file has format {sig.format} and algorithm {sig.algorithm!r}; "
            "this mcphost reads format 1, ed25519",
            data={"reason": "bad_signature"},
        )
    return sig
