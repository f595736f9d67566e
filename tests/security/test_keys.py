"""Keys on disk and the trust store."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mcphost.sdk.errors import ConfigError, VerificationError
from mcphost.security import (
    TrustStore,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    write_private_key,
    write_public_key,
)


def test_private_key_file_is_mode_0600_and_loads_back_to_the_same_key(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "k.key"
    write_private_key(path, key, None)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = load_private_key(path)
    assert loaded.key_id == key.key_id
    assert loaded.public_key.verify(key.sign(b"m"), b"m")


def test_encrypted_private_key_needs_the_right_passphrase(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "k.key"
    write_private_key(path, key, b"correct horse")
    assert b"ENCRYPTED" in path.read_bytes()
    assert load_private_key(path, b"correct horse").key_id == key.key_id
    with pytest.raises(ConfigError, match="encrypted"):
        load_private_key(path)
    with pytest.raises(ConfigError, match="passphrase"):
        load_private_key(path, b"wrong")


def test_key_id_is_derived_from_the_public_key_and_stable_across_files(tmp_path: Path) -> None:
    key = generate_key()
    write_public_key(tmp_path / "k.pub", key)
    pub = load_public_key(tmp_path / "k.pub")
    assert re.fullmatch(r"ed25519:[0-9a-f]{16}", key.key_id)
    assert key_id(pub) == key.key_id == pub.key_id
    assert generate_key().key_id != key.key_id


def test_a_non_ed25519_key_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    pem = other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "ec.pub").write_bytes(pem)
    with pytest.raises(ConfigError, match="not an Ed25519"):
        load_public_key(tmp_path / "ec.pub")
    with pytest.raises(ConfigError, match="not an Ed25519"):
        TrustStore(tmp_path / "keys").trust(pem)


def test_garbage_is_not_a_key(tmp_path: Path) -> None:
    (tmp_path / "x.pub").write_bytes(b"hello")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        load_public_key(tmp_path / "x.pub")


def test_trusted_key_is_listed_and_found_by_its_id(tmp_path: Path) -> None:
    key = generate_key()
    store = TrustStore(tmp_path / "keys")
    kid = store.trust(key.public_key.pem(), "alice")
    assert kid == key.key_id
    assert store.get(kid) == key.public_key
    (record,) = store.list()
    assert (record.key_id, record.name, record.revoked) == (kid, "alice", False)
    assert store.trust(key.public_key.pem(), "again") == kid  # idempotent
    assert len(store.list()) == 1


def test_revoked_key_is_refused_by_another_store_instance_at_once(tmp_path: Path) -> None:
    key = generate_key()
    reader = TrustStore(tmp_path / "keys")
    TrustStore(tmp_path / "keys").trust(key.public_key.pem())
    assert reader.get(key.key_id) is not None
    TrustStore(tmp_path / "keys").revoke(key.key_id, "key leaked")
    assert reader.get(key.key_id) is None
    with pytest.raises(VerificationError, match=r"revoked \(key leaked\)") as info:
        reader.require(key.key_id)
    assert info.value.data["reason"] == "revoked_key"
    (record,) = reader.list()
    assert record.revoked and record.reason == "key leaked" and record.revoked_at


def test_a_revoked_key_cannot_be_trusted_again(tmp_path: Path) -> None:
    key = generate_key()
    store = TrustStore(tmp_path / "keys")
    store.trust(key.public_key.pem())
    store.revoke(key.key_id)
    with pytest.raises(ConfigError, match="revoked"):
        store.trust(key.public_key.pem())


def test_unknown_and_malformed_key_ids_are_distinct_errors(tmp_path: Path) -> None:
    store = TrustStore(tmp_path / "keys")
    with pytest.raises(VerificationError, match="not trusted") as info:
        store.require(generate_key().key_id)
    assert info.value.data["reason"] == "unknown_key"
    with pytest.raises(VerificationError, match="not a valid key id"):
        store.require("ed25519:../../etc/passwd")
    with pytest.raises(ConfigError, match="not a key id"):
        store.revoke("nonsense")
    with pytest.raises(ConfigError, match="not in the trust store"):
        store.revoke(generate_key().key_id)


def test_a_key_file_swapped_inside_the_store_is_detected(tmp_path: Path) -> None:
    good, evil = generate_key(), generate_key()
    store = TrustStore(tmp_path / "keys")
    store.trust(good.public_key.pem())
    pub_file = store.dir / (good.key_id.split(":")[1] + ".pub")
    pub_file.write_bytes(evil.public_key.pem())
    with pytest.raises(VerificationError, match="tampered"):
        store.require(good.key_id)


def test_a_damaged_revocation_list_fails_closed(tmp_path: Path) -> None:
    key = generate_key()
    store = TrustStore(tmp_path / "keys")
    store.trust(key.public_key.pem())
    store.revocation_file.write_text("{not json")
    with pytest.raises(ConfigError, match="revocation list"):
        store.require(key.key_id)


def test_trust_store_changes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = TrustStore(tmp_path / "keys")
    for _ in range(3):
        key = generate_key()
        store.trust(key.public_key.pem())
        store.revoke(key.key_id)
    leftovers = [p.name for p in store.dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    assert len(store.list()) == 3
