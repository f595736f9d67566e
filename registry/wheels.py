"""A plugin wheel as the registry takes it: verified bytes, identity, permissions.

Signed wheels go through :func:`mcphost.security.verify.verify_wheel_bytes`; the files
the registry unpacks later are exactly the bytes that were checked. Unsigned wheels are
taken only when the operator allows them, and then their RECORD hashes are checked.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from mcphost.sdk.errors import RegistryError, VerificationError
from mcphost.sdk.plugin import ENTRY_POINT_GROUP
from mcphost.security.manifest import MANIFEST_NAME, SIGNATURE_NAME
from mcphost.security.permissions import Permissions
from mcphost.security.truststore import TrustStore
from mcphost.security.verify import REINSTALL_ADVICE, verify_wheel_bytes
from mcphost.security.wheel import RECORD_NAME, WheelArchive, record_hash

__all__ = ["ENTRY_POINT_GROUP", "CheckedWheel", "check_wheel"]

log = logging.getLogger("mcphost.registry")

#: Distributions the host itself provides to every worker; never installed per plugin.
_PROVIDED = frozenset({"mcphost"})


@dataclass
class CheckedWheel:
    """A wheel that passed verification (or was allowed unsigned), with its parts."""

    #: The file it came from, for messages.
    source: str
    sha256: str
    data: bytes
    dist_name: str
    version: str
    dist_info: str
    #: The plugin's name (its ``mcphost.plugins`` entry-point name) and entry.
    plugin: str
    entry: str
    #: Archive path -> verified bytes.
    members: dict[str, bytes]
    key_id: str | None
    sequence: int | None
    permissions: Permissions
    #: Requirements of the distribution (markers evaluated, ``mcphost`` left out).
    requires: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def signed(self) -> bool:
        return self.key_id is not None

    @property
    def label(self) -> str:
        return f"{self.plugin} {self.version}"


def _unsigned_members(archive: WheelArchive, source: str) -> dict[str, bytes]:
    """Every member of an unsigned wheel, checked against its RECORD where it lists hashes."""
    import csv
    import io

    members = {name: archive.read(name) for name in archive.infos}
    record = members.get(archive.dist_path(RECORD_NAME))
    if record is None:
        raise VerificationError(
            f"{source} has no RECORD file; rebuild the wheel with `pip wheel`",
            data={"reason": "bad_wheel", "wheel": source},
        )
    for row in csv.reader(io.StringIO(record.decode("utf-8", "replace"))):
        if len(row) >= 2 and row[1]:
            have = members.get(row[0])
            if have is None or record_hash(have) != row[1]:
                raise VerificationError(
                    f"{source}: member {row[0]!r} does not match the wheel's RECORD; the "
                    "wheel is damaged or was altered. Rebuild it",
                    data={"reason": "file_mismatch", "wheel": source, "file": row[0]},
                )
    return members


def _refusal(exc: VerificationError, source: str) -> VerificationError:
    """A verification refusal as the installing operator reads it: naming the wheel,
    and for an unsigned one saying how plugin development runs without signatures."""
    message = exc.message
    if source not in message:
        message = f"{source}: {message}"
    if message.endswith(REINSTALL_ADVICE):
        message = message.removesuffix(REINSTALL_ADVICE) + (
            "The wheel was altered after it was signed; get it again from its publisher"
        )
    if exc.data.get("reason") == "unsigned":
        message += (
            "; or, for plugin development only, set allow_unsigned = true in the "
            "configuration (config.toml in the mcphost home)"
        )
    return VerificationError(message, data=exc.data)


def _requirements(metadata: bytes) -> list[str]:
    headers = BytesHeaderParser().parsebytes(metadata)
    out: list[str] = []
    for raw in headers.get_all("Requires-Dist") or []:
        try:
            req = Requirement(str(raw))
        except InvalidRequirement:
            raise RegistryError(f"the wheel declares an invalid requirement {raw!r}") from None
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        if canonicalize_name(req.name) in _PROVIDED:
            continue
        out.append(str(req))
    return out


def check_wheel(
    data: bytes,
    *,
    source: str,
    trust: TrustStore,
    allow_unsigned: bool,
    installed_sequence: int | None = None,
) -> CheckedWheel:
    """Verify ``data`` and pick out what the registry needs; raise on anything wrong."""
    sha = hashlib.sha256(data).hexdigest()
    archive = WheelArchive(data, source=source)
    signed = archive.has(archive.dist_path(MANIFEST_NAME)) or archive.has(
        archive.dist_path(SIGNATURE_NAME)
    )
    warnings: list[str] = []
    if signed or not allow_unsigned:
        # An unsigned wheel lands here only when unsigned wheels are not allowed: the
        # verifier refuses it with reason "unsigned" and a message saying how to sign.
        try:
            verified = verify_wheel_bytes(
                data, trust, installed_sequence=installed_sequence, source=source
            )
        except VerificationError as exc:
            raise _refusal(exc, source) from None
        members = verified.members
        key_id: str | None = verified.key_id
        sequence: int | None = verified.manifest.sequence
        permissions = verified.manifest.permissions
        entry_points = verified.manifest.entry_points
    else:
        members = _unsigned_members(archive, source)
        key_id = None
        sequence = None
        permissions = Permissions()
        entry_points = archive.entry_points()
        warnings.append(
            f"{source} is not signed; installing it only because the configuration sets "
            "allow_unsigned = true (for plugin development)"
        )
    plugins = entry_points.get(ENTRY_POINT_GROUP, {})
    if len(plugins) != 1:
        raise RegistryError(
            f"{source} declares {len(plugins)} entry points in the {ENTRY_POINT_GROUP!r} "
            f"group ({', '.join(sorted(plugins)) or 'none'}); a plugin wheel declares exactly "
            f'one, e.g. [project.entry-points."{ENTRY_POINT_GROUP}"] name = "pkg:plugin"',
            data={"wheel": source},
        )
    ((plugin, entry),) = plugins.items()
    if not plugin.isidentifier():
        raise RegistryError(
            f"{source}: plugin name {plugin!r} must be a Python identifier (letters, digits, "
            "underscores); rename the entry point",
            data={"wheel": source},
        )
    try:
        Version(archive.version)
    except InvalidVersion:
        raise RegistryError(
            f"{source}: version {archive.version!r} is not a valid version",
            data={"wheel": source},
        ) from None
    return CheckedWheel(
        source=source,
        sha256=sha,
        data=data,
        dist_name=archive.name,
        version=archive.version,
        dist_info=archive.dist_info,
        plugin=plugin,
        entry=entry,
        members=members,
        key_id=key_id,
        sequence=sequence,
        permissions=permissions,
        requires=_requirements(members[archive.dist_path("METADATA")]),
        warnings=warnings,
    )
