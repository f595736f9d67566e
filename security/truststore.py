"""The trust store: which public keys may sign plugins, and which were revoked.

One directory holds one ``<hex>.pub`` PEM file per trusted key, a ``<hex>.json`` beside
it (name, time added) and ``revoked.json``, the revocation list. Every change is a
temp-file write plus rename under a lock, so a reader sees the old state or the new one.
Nothing is cached: every lookup reads the files as they are now, so a revocation takes
effect on the very next verification.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from mcphost.sdk.errors import ConfigError, VerificationError
from mcphost.security._files import atomic_write
from mcphost.security.keys import KEY_ID_PREFIX, PublicKey, public_key_from_pem

__all__ = ["KeyRecord", "TrustStore"]

_KEY_ID = re.compile(re.escape(KEY_ID_PREFIX) + r"([0-9a-f]{16})")
_MAX_INDEX_FILE = 4 * 1024 * 1024


class KeyRecord(msgspec.Struct, frozen=True):
    """One key the store knows, as ``mcphost keys list`` shows it."""

    key_id: str
    name: str | None
    #: Unix time the key was trusted.
    added: float
    revoked: bool = False
    revoked_at: float | None = None
    reason: str | None = None


class _KeyMeta(msgspec.Struct, frozen=True):
    key_id: str
    name: str | None
    added: float


class _Revocation(msgspec.Struct, frozen=True):
    revoked_at: float
    reason: str


class _RevocationList(msgspec.Struct, frozen=True):
    format: int = 1
    revoked: dict[str, _Revocation] = {}


def _hex_of(key_id: str) -> str:
    m = _KEY_ID.fullmatch(key_id)
    if m is None:
        raise ConfigError(
            f"{key_id!r} is not a key id; key ids look like {KEY_ID_PREFIX}0123456789abcdef "
            "(see `mcphost keys list`)"
        )
    return m.group(1)


class TrustStore:
    """Trusted Ed25519 public keys and the revocation list, kept in one directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    def __repr__(self) -> str:
        return f"TrustStore({str(self.dir)!r})"

    # -- files ---------------------------------------------------------------------

    @property
    def revocation_file(self) -> Path:
        return self.dir / "revoked.json"

    def _pub_path(self, hex_id: str) -> Path:
        return self.dir / f"{hex_id}.pub"

    def _meta_path(self, hex_id: str) -> Path:
        return self.dir / f"{hex_id}.json"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_small(self, path: Path) -> bytes | None:
        try:
            with open(path, "rb") as f:
                data = f.read(_MAX_INDEX_FILE + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"cannot read trust store file {path}: {exc}") from exc
        if len(data) > _MAX_INDEX_FILE:
            raise ConfigError(f"trust store file {path} is too large; it is not one mcphost wrote")
        return data

    def _revocations(self) -> _RevocationList:
        data = self._read_small(self.revocation_file)
        if data is None:
            return _RevocationList()
        try:
            return msgspec.json.decode(data, type=_RevocationList)
        except msgspec.DecodeError as exc:
            # Fail closed: without a readable revocation list no key can be trusted.
            raise ConfigError(
                f"the revocation list {self.revocation_file} is damaged ({exc}); no plugin "
                "can be verified until it is repaired or restored from backup"
            ) from exc

    def _meta(self, hex_id: str) -> _KeyMeta | None:
        data = self._read_small(self._meta_path(hex_id))
        if data is None:
            return None
        try:
            return msgspec.json.decode(data, type=_KeyMeta)
        except msgspec.DecodeError:
            return None

    # -- changes -------------------------------------------------------------------

    def trust(self, public_key_pem: bytes, name: str | None = None) -> str:
        """Trust a PEM Ed25519 public key; returns its key id.

        Trusting a key that is already trusted updates nothing and returns its id.
        A revoked key stays revoked: trusting it again is refused.
        """
        pub = public_key_from_pem(public_key_pem)
        kid = pub.key_id
        hex_id = _hex_of(kid)
        with self._locked():
            if kid in self._revocations().revoked:
                raise ConfigError(
                    f"key {kid} was revoked and cannot be trusted again; "
                    "generate a new key and sign the plugin with it"
                )
            existing = self._read_small(self._pub_path(hex_id))
            if existing is not None:
                if public_key_from_pem(existing, source=str(self._pub_path(hex_id))) != pub:
                    raise ConfigError(
                        f"another key with id {kid} is already trusted; refusing to replace "
                        "it. Generate a new key"
                    )
                return kid
            meta = _KeyMeta(key_id=kid, name=name, added=time.time())
            atomic_write(self._meta_path(hex_id), msgspec.json.encode(meta))
            # The .pub file is written last: its presence is what makes the key trusted.
            atomic_write(self._pub_path(hex_id), pub.pem())
        return kid

    def revoke(self, key_id: str, reason: str = "") -> KeyRecord:
        """Revoke a trusted key: every plugin signed by it is refused from now on."""
        hex_id = _hex_of(key_id)
        with self._locked():
            if not self._pub_path(hex_id).exists():
                raise ConfigError(
                    f"key {key_id} is not in the trust store {self.dir}; "
                    "see `mcphost keys list` for the known key ids"
                )
            rl = self._revocations()
            if key_id not in rl.revoked:
                revoked = dict(rl.revoked)
                revoked[key_id] = _Revocation(revoked_at=time.time(), reason=reason)
                new = _RevocationList(format=1, revoked=revoked)
                atomic_write(self.revocation_file, msgspec.json.encode(new, order="sorted"))
        record = self.record(key_id)
        assert record is not None
        return record

    # -- lookups -------------------------------------------------------------------

    def record(self, key_id: str) -> KeyRecord | None:
        """What the store knows of one key, or ``None`` when it was never trusted."""
        hex_id = _hex_of(key_id)
        if not self._pub_path(hex_id).exists():
            return None
        return self._record(hex_id, self._revocations())

    def _record(self, hex_id: str, rl: _RevocationList) -> KeyRecord:
        kid = KEY_ID_PREFIX + hex_id
        meta = self._meta(hex_id)
        rev = rl.revoked.get(kid)
        added = meta.added if meta else self._pub_path(hex_id).stat().st_mtime
        return KeyRecord(
            key_id=kid,
            name=meta.name if meta else None,
            added=added,
            revoked=rev is not None,
            revoked_at=rev.revoked_at if rev else None,
            reason=rev.reason if rev else None,
        )

    def list(self) -> list[KeyRecord]:
        """Every key ever trusted here, revoked ones included, oldest first."""
        if not self.dir.is_dir():
            return []
        rl = self._revocations()
        out = []
        for p in self.dir.glob("*.pub"):
            m = re.fullmatch(r"[0-9a-f]{16}", p.stem)
            if m is not None:
                out.append(self._record(p.stem, rl))
        return sorted(out, key=lambda r: (r.added, r.key_id))

    def get(self, key_id: str) -> PublicKey | None:
        """The trusted key with this id, or ``None`` when it is unknown or revoked."""
        try:
            return self.require(key_id)
        except VerificationError:
            return None

    def require(self, key_id: str) -> PublicKey:
        """The trusted key with this id; unknown and revoked keys are distinct errors."""
        m = _KEY_ID.fullmatch(key_id)
        if m is None:
            raise VerificationError(
                f"signature names key {key_id!r}, which is not a valid key id",
                data={"key_id": key_id, "reason": "unknown_key"},
            )
        hex_id = m.group(1)
        rev = self._revocations().revoked.get(key_id)
        if rev is not None:
            why = f" ({rev.reason})" if rev.reason else ""
            raise VerificationError(
                f"key {key_id} was revoked{why}; plugins signed by it are refused. "
                "Ask the publisher for a version signed by a key you trust",
                data={"key_id": key_id, "reason": "revoked_key"},
            )
        pem = self._read_small(self._pub_path(hex_id))
        if pem is None:
            raise VerificationError(
                f"key {key_id} is not trusted (not in {self.dir}); if you trust its publisher, "
                "add it with `mcphost keys trust KEY.pub`",
                data={"key_id": key_id, "reason": "unknown_key"},
            )
        pub = public_key_from_pem(pem, source=str(self._pub_path(hex_id)))
        if pub.key_id != key_id:
            raise VerificationError(
                f"trust store file {self._pub_path(hex_id)} holds key {pub.key_id}, not "
                f"{key_id}; the trust store was tampered with. Remove the file and trust the "
                "key again",
                data={"key_id": key_id, "reason": "unknown_key"},
            )
        return pub
