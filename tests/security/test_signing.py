"""Signing a wheel: manifest and signature inside, RECORD still valid, pip still installs."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from security_helpers import SIGNED_AT, member, members
from support.wheels import pip

from mcphost.sdk.errors import ConfigError
from mcphost.security import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Permissions,
    PrivateKey,
    TrustStore,
    decode_manifest,
    sign_wheel,
    verify_wheel_bytes,
)
from mcphost.security.wheel import record_hash

DIST = "mcphost_textkit-1.0.0.dist-info"


def test_signed_wheel_carries_manifest_and_signature_in_its_dist_info(
    signed_wheels: dict[str, Path], signing_key: PrivateKey
) -> None:
    names = members(signed_wheels["textkit"])
    assert f"{DIST}/{MANIFEST_NAME}" in names and f"{DIST}/{SIGNATURE_NAME}" in names
    manifest = decode_manifest(member(signed_wheels["textkit"], f"{DIST}/{MANIFEST_NAME}"))
    assert (manifest.name, manifest.version, manifest.sequence) == ("mcphost-textkit", "1.0.0", 5)
    assert manifest.key_id == signing_key.key_id
    assert manifest.entry_points == {"mcphost.plugins": {"textkit": "mcphost_textkit:plugin"}}
    assert manifest.permissions.network == ["api.example.org:443"]
    assert manifest.issued_at == int(SIGNED_AT)
    assert manifest.expires_at == int(SIGNED_AT) + 365 * 24 * 3600
    listed = [f.path for f in manifest.files]
    assert "mcphost_textkit/__init__.py" in listed
    assert f"{DIST}/RECORD" not in listed and f"{DIST}/{SIGNATURE_NAME}" not in listed


def test_record_of_a_signed_wheel_lists_every_member_with_a_correct_hash(
    signed_wheels: dict[str, Path],
) -> None:
    wheel = signed_wheels["textkit"]
    with zipfile.ZipFile(wheel) as zf:
        rows = list(csv.reader(io.StringIO(zf.read(f"{DIST}/RECORD").decode())))
        by_path = {row[0]: row for row in rows}
        assert set(by_path) == set(zf.namelist())
        for path, digest, size in rows:
            if path in (f"{DIST}/RECORD", f"{DIST}/{SIGNATURE_NAME}"):
                assert (digest, size) == ("", "")
                continue
            data = zf.read(path)
            assert digest == record_hash(data) and size == str(len(data)), path


def test_signed_wheel_installs_with_plain_pip_and_its_plugin_imports(
    signed_wheels: dict[str, Path], tmp_path: Path
) -> None:
    target = tmp_path / "t"
    pip("install", "--no-deps", "--target", str(target), str(signed_wheels["textkit"]))
    assert (target / DIST / MANIFEST_NAME).is_file()
    out = subprocess.run(
        [sys.executable, "-c", "import mcphost_textkit as t; print(t.upper('ok'))"],
        env={"PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "OK"


def test_signing_in_place_twice_replaces_the_manifest_and_signature(
    built_wheels: dict[str, Path], signing_key: PrivateKey, tmp_path: Path, trust: TrustStore
) -> None:
    wheel = tmp_path / built_wheels["textkit"].name
    wheel.write_bytes(built_wheels["textkit"].read_bytes())
    assert sign_wheel(wheel, signing_key, permissions=Permissions(), sequence=1) == wheel
    sign_wheel(wheel, signing_key, permissions=Permissions(env=["LANG"]), sequence=2)
    names = members(wheel)
    assert names.count(f"{DIST}/{MANIFEST_NAME}") == 1
    verified = verify_wheel_bytes(wheel, trust)
    assert verified.manifest.sequence == 2 and verified.manifest.permissions.env == ["LANG"]


def test_default_sequence_is_the_signing_time(
    built_wheels: dict[str, Path], signing_key: PrivateKey, tmp_path: Path
) -> None:
    out = sign_wheel(
        built_wheels["textkit"],
        signing_key,
        permissions=Permissions(),
        out=tmp_path,
        now=SIGNED_AT + 10,
    )
    manifest = decode_manifest(member(out, f"{DIST}/{MANIFEST_NAME}"))
    assert manifest.sequence == manifest.issued_at == int(SIGNED_AT + 10)
    assert out.name == built_wheels["textkit"].name  # pip needs the wheel's own file name


def test_signing_refuses_a_file_that_is_not_a_wheel(
    signing_key: PrivateKey, tmp_path: Path
) -> None:
    bogus = tmp_path / "x-1.0-py3-none-any.whl"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a valid wheel"):
        sign_wheel(bogus, signing_key, permissions=Permissions())


def test_signing_refuses_invalid_permissions(
    built_wheels: dict[str, Path], signing_key: PrivateKey, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="network entry"):
        sign_wheel(
            built_wheels["textkit"],
            signing_key,
            permissions=Permissions(network=["nope"]),
            out=tmp_path,
        )


def test_out_that_is_not_a_wheel_file_name_is_a_directory_created_on_demand(
    built_wheels: dict[str, Path], signing_key: PrivateKey, tmp_path: Path
) -> None:
    out = sign_wheel(
        built_wheels["textkit"],
        signing_key,
        permissions=Permissions(),
        out=tmp_path / "new" / "dir",
    )
    assert out == tmp_path / "new" / "dir" / built_wheels["textkit"].name
    assert out.is_file()
