"""Keys, trust, signed manifests and their verification, and the audit log.

Pure functions over bytes, keys and files: nothing here starts processes or reads the
registry. The only mcphost import is the error tree of :mod:`mcphost.sdk.errors`.
"""

from mcphost.security.audit import AuditLog
from mcphost.security.keys import (
    PrivateKey,
    PublicKey,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    public_key_from_pem,
    write_private_key,
    write_public_key,
)
from mcphost.security.manifest import (
    MANIFEST_DOMAIN,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    FileEntry,
    Manifest,
    decode_manifest,
    encode_manifest,
)
from mcphost.security.permissions import (
    PermissionLimits,
    Permissions,
    load_permissions,
    parse_permissions,
)
from mcphost.security.report import Check, VerificationReport
from mcphost.security.signing import build_manifest, sign_manifest, sign_wheel
from mcphost.security.tokens import (
    Token,
    TokenError,
    create_token,
    find_token,
    load_tokens,
    revoke_token,
)
from mcphost.security.truststore import KeyRecord, TrustStore
from mcphost.security.verify import (
    VerifiedWheel,
    is_importable,
    verify_tree,
    verify_wheel_bytes,
)

__all__ = [
    "MANIFEST_DOMAIN",
    "MANIFEST_NAME",
    "SIGNATURE_NAME",
    "AuditLog",
    "Check",
    "FileEntry",
    "KeyRecord",
    "Manifest",
    "PermissionLimits",
    "Permissions",
    "PrivateKey",
    "PublicKey",
    "Token",
    "TokenError",
    "TrustStore",
    "VerificationReport",
    "VerifiedWheel",
    "build_manifest",
    "create_token",
    "decode_manifest",
    "encode_manifest",
    "find_token",
    "generate_key",
    "is_importable",
    "key_id",
    "load_permissions",
    "load_private_key",
    "load_public_key",
    "load_tokens",
    "parse_permissions",
    "public_key_from_pem",
    "revoke_token",
    "sign_manifest",
    "sign_wheel",
    "verify_tree",
    "verify_wheel_bytes",
    "write_private_key",
    "write_public_key",
]
