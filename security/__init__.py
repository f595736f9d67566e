"""Keys, trust, signed manifests and their verification, and the audit log.

Pure functions over bytes, keys and files: nothing here starts processes or reads the
registry. The only mcphost import is the error tree of :mod:`mcphost.sdk.errors`.

The names below load on first use: verifying a plugin before its worker starts
does not load signing, tokens or the other tools of the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_WHERE = {
    "AuditLog": "audit",
    "Check": "report",
    "FileEntry": "manifest",
    "KeyRecord": "truststore",
    "MANIFEST_DOMAIN": "manifest",
    "MANIFEST_NAME": "manifest",
    "Manifest": "manifest",
    "PermissionLimits": "permissions",
    "Permissions": "permissions",
    "PrivateKey": "keys",
    "PublicKey": "keys",
    "SIGNATURE_NAME": "manifest",
    "Token": "tokens",
    "TokenError": "tokens",
    "TrustStore": "truststore",
    "VerificationReport": "report",
    "VerifiedWheel": "verify",
    "build_manifest": "signing",
    "create_token": "tokens",
    "decode_manifest": "manifest",
    "encode_manifest": "manifest",
    "find_token": "tokens",
    "generate_key": "keys",
    "is_importable": "verify",
    "key_id": "keys",
    "load_permissions": "permissions",
    "load_private_key": "keys",
    "load_public_key": "keys",
    "load_tokens": "tokens",
    "parse_permissions": "permissions",
    "public_key_from_pem": "keys",
    "revoke_token": "tokens",
    "sign_manifest": "signing",
    "sign_wheel": "signing",
    "verify_tree": "verify",
    "verify_wheel_bytes": "verify",
    "write_private_key": "keys",
    "write_public_key": "keys",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
