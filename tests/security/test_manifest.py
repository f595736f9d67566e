"""Permissions files, and the manifest's one canonical byte form."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcphost.sdk.errors import ConfigError, VerificationError
from mcphost.security import (
    FileEntry,
    Manifest,
    PermissionLimits,
    Permissions,
    decode_manifest,
    encode_manifest,
    load_permissions,
)
from mcphost.security.manifest import MAX_MANIFEST_BYTES, decode_signature

FULL = """
network = ["api.example.org:443", "[::1]:8080"]
env = ["LANG", "HTTP_PROXY"]

[filesystem]
read = ["/usr/share/dict"]
write = ["/var/tmp/cache"]

[limits]
memory_mb = 256
cpu_seconds = 30
processes = 4
open_files = 64
"""


def test_permissions_file_maps_to_permissions(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(FULL)
    perms = load_permissions(path)
    assert perms == Permissions(
        network=["api.example.org:443", "[::1]:8080"],
        read_paths=["/usr/share/dict"],
        write_paths=["/var/tmp/cache"],
        env=["LANG", "HTTP_PROXY"],
        limits=PermissionLimits(memory_mb=256, cpu_seconds=30, processes=4, open_files=64),
    )


def test_an_empty_permissions_file_grants_nothing(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("")
    perms = load_permissions(path)
    assert perms.network is None and perms.read_paths == [] and perms.env == []


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("netwrok = []", "'netwrok'"),
        ("[filesystem]\nexec = []", "'filesystem.exec'"),
        ("[limits]\nmemory = 1", "'limits.memory'"),
        ("[limits]\nmemory_mb = -1", "limits.memory_mb"),
        ("[limits]\nmemory_mb = true", "limits.memory_mb"),
        ("[limits]\ncpu_seconds = 1.5", "limits.cpu_seconds"),
        ('network = ["example.org"]', "'example.org'"),
        ('network = ["example.org:99999"]', "'example.org:99999'"),
        ('network = "example.org:443"', "network"),
        ('env = ["BAD-NAME"]', "'BAD-NAME'"),
        ('[filesystem]\nread = ["relative/path"]', "'relative/path'"),
        ('[filesystem]\nwrite = ["/data/../etc"]', "'/data/../etc'"),
        ("network = [", "not valid TOML"),
    ],
)
def test_bad_permissions_file_is_refused_naming_the_key(
    tmp_path: Path, text: str, named: str
) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_permissions(path)
    assert named in info.value.message
    assert str(path) in info.value.message


def _manifest(**changes: object) -> Manifest:
    base = Manifest(
        format=1,
        name="mcphost-textkit",
        version="1.0.0",
        sequence=3,
        issued_at=100,
        expires_at=200,
        dist_info="mcphost_textkit-1.0.0.dist-info",
        entry_points={"mcphost.plugins": {"textkit": "mcphost_textkit:plugin"}},
        permissions=Permissions(),
        files=[FileEntry("a.py", "0" * 64, 1), FileEntry("b/c.py", "f" * 64, 2)],
        key_id="ed25519:0123456789abcdef",
    )
    return msgspec.structs.replace(base, **changes)


def test_canonical_bytes_have_sorted_keys_and_no_whitespace() -> None:
    data = encode_manifest(_manifest())
    assert b" " not in data and b"\n" not in data
    assert data.startswith(b'{"dist_info":')
    assert decode_manifest(data) == _manifest()


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)
_paths = st.lists(
    st.from_regex(r"[a-z_]{1,8}(/[a-z_]{1,8}){0,2}\.py", fullmatch=True),
    unique=True,
    max_size=20,
).map(sorted)


@settings(max_examples=200, deadline=None)
@given(
    sequence=st.integers(0, 2**63 - 2),
    issued=st.integers(0, 2**40),
    life=st.integers(1, 2**40),
    entry_points=st.dictionaries(_text, st.dictionaries(_text, _text, max_size=3), max_size=3),
    paths=_paths,
    env=st.lists(st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True), max_size=4),
    network=st.none() | st.lists(st.sampled_from(["a.org:443", "*", "[::1]:1"]), max_size=3),
    memory=st.none() | st.integers(1, 2**20),
)
def test_canonical_encoding_round_trips_and_is_deterministic(
    sequence: int,
    issued: int,
    life: int,
    entry_points: dict[str, dict[str, str]],
    paths: list[str],
    env: list[str],
    network: list[str] | None,
    memory: int | None,
) -> None:
    manifest = _manifest(
        sequence=sequence,
        issued_at=issued,
        expires_at=issued + life,
        entry_points=entry_points,
        files=[FileEntry(p, "a" * 64, i) for i, p in enumerate(paths)],
        permissions=Permissions(
            network=network, env=env, limits=PermissionLimits(memory_mb=memory)
        ),
    )
    data = encode_manifest(manifest)
    decoded = decode_manifest(data)
    assert decoded == manifest
    assert encode_manifest(decoded) == data
    # The same content built with mappings in another order gives the same bytes.
    shuffled = msgspec.structs.replace(
        manifest,
        entry_points={g: dict(reversed(v.items())) for g, v in reversed(entry_points.items())},
    )
    assert encode_manifest(shuffled) == data


def test_non_canonical_manifest_bytes_are_refused() -> None:
    data = encode_manifest(_manifest())
    spaced = msgspec.json.format(data, indent=1)
    with pytest.raises(VerificationError, match="canonical"):
        decode_manifest(spaced)
    reordered = msgspec.json.encode(msgspec.structs.asdict(_manifest()))
    assert reordered != data
    with pytest.raises(VerificationError, match="canonical"):
        decode_manifest(reordered)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": 2}, "format 2"),
        ({"expires_at": 100}, "expires_at"),
        ({"files": [FileEntry("b.py", "0" * 64, 1), FileEntry("a.py", "0" * 64, 1)]}, "sorted"),
        ({"files": [FileEntry("a.py", "0" * 64, 1), FileEntry("a.py", "0" * 64, 1)]}, "twice"),
        ({"files": [FileEntry("../evil.py", "0" * 64, 1)]}, "'..'"),
        ({"files": [FileEntry("/etc/passwd", "0" * 64, 1)]}, "absolute"),
        ({"files": [FileEntry("a.py", "XYZ", 1)]}, "sha256"),
        ({"files": [FileEntry("a.py", "0" * 64, -1)]}, "size"),
        ({"key_id": "rsa:1"}, "key_id"),
        ({"dist_info": "../x.dist-info"}, "dist_info"),
        ({"version": "not a version"}, "version"),
    ],
)
def test_malformed_manifest_fields_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(VerificationError, match=message) as info:
        decode_manifest(encode_manifest(_manifest(**changes)))
    assert info.value.data["reason"] == "bad_manifest"


def test_unknown_manifest_field_is_refused() -> None:
    data = encode_manifest(_manifest())
    with pytest.raises(VerificationError, match="unknown field"):
        decode_manifest(b'{"aaa":1,' + data[1:])


def test_oversized_manifest_is_refused_unread() -> None:
    with pytest.raises(VerificationError, match="byte cap"):
        decode_manifest(b" " * (MAX_MANIFEST_BYTES + 1))


def test_oversized_or_malformed_signature_file_is_refused() -> None:
    with pytest.raises(VerificationError, match="byte cap"):
        decode_signature(b"x" * 5000)
    with pytest.raises(VerificationError, match="malformed"):
        decode_signature(b'{"format":1}')
