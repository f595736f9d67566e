"""Ed25519 signing keys: generate, store, load, and name them by a stable key id.

A key id is derived from the raw 32-byte public key, so the same key always has the
same id wherever it is stored: ``ed25519:`` followed by the first 16 hex digits of the
sha256 of the raw public key. Ids are names for people and files; trust never rests on
the id alone, because every signature is checked against the full stored key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from mcphost.sdk.errors import ConfigError
from mcphost.security._files import atomic_write

__all__ = [
    "KEY_ID_PREFIX",
    "PrivateKey",
    "PublicKey",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "public_key_from_pem",
    "write_private_key",
    "write_public_key",
]

KEY_ID_PREFIX = "ed25519:"
#: Key files larger than this are not keys; refuse them before parsing.
_MAX_KEY_FILE = 16 * 1024


@dataclass(frozen=True, eq=False)
class PublicKey:
    """An Ed25519 public key that can check signatures and knows its id."""

    key: Ed25519PublicKey

    @property
    def raw(self) -> bytes:
        """The 32 raw bytes of the key."""
        return self.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def key_id(self) -> str:
        return key_id(self)

    def pem(self) -> bytes:
        """The key as PEM SubjectPublicKeyInfo, the format of ``.pub`` files."""
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, signature: bytes, data: bytes) -> bool:
        """Whether ``signature`` is this key's signature over ``data``."""
        try:
            self.key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self.raw == other.raw

    def __hash__(self) -> int:
        return hash(self.raw)


@dataclass(frozen=True, eq=False)
class PrivateKey:
    """An Ed25519 private key used to sign plugin manifests."""

    key: Ed25519PrivateKey

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(self.key.public_key())

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature over ``data``."""
        return self.key.sign(data)

    def __repr__(self) -> str:  # never print key material
        return f"PrivateKey({self.key_id})"


def generate_key() -> PrivateKey:
    """A fresh Ed25519 key from the operating system's random source."""
    return PrivateKey(Ed25519PrivateKey.generate())


def key_id(public_key: PublicKey | Ed25519PublicKey) -> str:
    """The stable id of a public key: ``ed25519:`` + 16 hex digits of sha256(raw key)."""
    pub = public_key if isinstance(public_key, PublicKey) else PublicKey(public_key)
    return KEY_ID_PREFIX + hashlib.sha256(pub.raw).hexdigest()[:16]


def write_private_key(path: Path, key: PrivateKey, passphrase: bytes | None = None) -> None:
    """Write ``key`` as PEM PKCS8 with file mode 0600, encrypted when given a passphrase."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    atomic_write(Path(path), pem, 0o600)


def write_public_key(path: Path, key: PublicKey | PrivateKey) -> None:
    """Write the public half as PEM (mode 0644): the file others put in their trust store."""
    pub = key.public_key if isinstance(key, PrivateKey) else key
    atomic_write(Path(path), pub.pem(), 0o644)


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > _MAX_KEY_FILE:
            raise ConfigError(
                f"{what} file {path} is {size} bytes, too large to be a key; "
                "pass the PEM file written by `mcphost keys generate`"
            )
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror or exc}") from exc


def load_private_key(path: Path, passphrase: bytes | None = None) -> PrivateKey:
    """Load an Ed25519 private key from a PEM file; a wrong or missing passphrase is an error."""
    path = Path(path)
    data = _read_key_file(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError as exc:
        if passphrase:
            raise ConfigError(
                f"private key {path} is not encrypted, but a passphrase was given; "
                "run again without a passphrase"
            ) from exc
        raise ConfigError(
            f"private key {path} is encrypted; give its passphrase "
            "(prompt or MCPHOST_KEY_PASSPHRASE)"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        hint = "check the passphrase" if passphrase else "is it a PEM private key?"
        raise ConfigError(f"cannot load private key {path}: {hint}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"private key {path} is not an Ed25519 key; generate one with `mcphost keys generate`"
        )
    return PrivateKey(key)


def public_key_from_pem(data: bytes, *, source: str = "public key") -> PublicKey:
    """Parse a PEM SubjectPublicKeyInfo Ed25519 public key; ``source`` names it in errors."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"{source} is not a PEM public key; pass the .pub file written by "
            "`mcphost keys generate`"
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{source} is not an Ed25519 public key; only Ed25519 keys are trusted")
    return PublicKey(key)


def load_public_key(path: Path) -> PublicKey:
    """Load an Ed25519 public key from a PEM file."""
    path = Path(path)
    return public_key_from_pem(_read_key_file(path, "public key"), source=f"public key {path}")
