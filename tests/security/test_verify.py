"""Verification of signed wheels and installed trees, and the attacks it must stop."""

from __future__ import annotations

import base64
import json
import os
import shutil
import zipfile
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from security_helpers import NOW, SIGNED_AT, YEAR, member, rewrite_wheel
from support.wheels import build_wheel, pip

from mcphost.sdk.errors import VerificationError
from mcphost.security import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Permissions,
    PrivateKey,
    TrustStore,
    VerificationReport,
    build_manifest,
    sign_manifest,
    sign_wheel,
    verify_tree,
    verify_wheel_bytes,
)
from mcphost.security.manifest import MAX_MANIFEST_BYTES
from mcphost.security.wheel import WheelArchive

DIST = "mcphost_textkit-1.0.0.dist-info"
INIT = "mcphost_textkit/__init__.py"


def refused(fn: object, *args: object, **kwargs: object) -> tuple[VerificationError, str]:
    """Run a verification that must fail; return the error and its reason."""
    report = VerificationReport(target="")
    with pytest.raises(VerificationError) as info:
        fn(*args, report=report, **kwargs)  # type: ignore[operator]
    assert not report.ok and report.error == info.value.message
    return info.value, str(info.value.data["reason"])


# -- wheels -------------------------------------------------------------------------


def test_signed_wheel_verifies_and_hands_back_exactly_the_verified_bytes(
    signed_wheels: dict[str, Path], trust: TrustStore
) -> None:
    wheel = signed_wheels["textkit"]
    verified = verify_wheel_bytes(wheel.read_bytes(), trust, now=NOW)
    assert verified.manifest.name == "mcphost-textkit"
    assert verified.report.ok
    assert verified.members[INIT] == member(wheel, INIT)
    with zipfile.ZipFile(wheel) as zf:
        assert set(verified.members) == set(zf.namelist())
    checked = {(c.check, c.subject) for c in verified.report.checks}
    assert ("file", INIT) in checked and ("signature", verified.key_id) in checked


def test_wheel_with_swapped_file_content_and_intact_signature_is_refused(
    signed_wheels: dict[str, Path], trust: TrustStore, tmp_path: Path
) -> None:
    evil = rewrite_wheel(
        signed_wheels["textkit"],
        tmp_path / "e.whl",
        replace={INIT: member(signed_wheels["textkit"], INIT) + b"\nimport os\n"},
    )
    err, reason = refused(verify_wheel_bytes, evil, trust, now=NOW)
    assert reason == "file_mismatch" and INIT in err.message
    assert INIT in err.message and err.data["files"] == [INIT]


def test_wheel_with_an_extra_module_dropped_in_is_refused(
    signed_wheels: dict[str, Path], trust: TrustStore, tmp_path: Path
) -> None:
    evil = rewrite_wheel(
        signed_wheels["textkit"], tmp_path / "e.whl", add={"mcphost_textkit/evil.py": b"1"}
    )
    err, reason = refused(verify_wheel_bytes, evil, trust, now=NOW)
    assert reason == "unlisted_file" and "mcphost_textkit/evil.py" in err.message


def test_wheel_with_a_symlink_member_is_refused(
    signed_wheels: dict[str, Path], trust: TrustStore, tmp_path: Path
) -> None:
    def as_symlink(info: zipfile.ZipInfo) -> None:
        info.external_attr = 0o120777 << 16

    evil = rewrite_wheel(
        signed_wheels["textkit"],
        tmp_path / "e.whl",
        add={"mcphost_textkit/link": b"/etc"},
        tweak=as_symlink,
    )
    err, reason = refused(verify_wheel_bytes, evil, trust, now=NOW)
    assert reason == "bad_wheel" and "symlink" in err.message


@pytest.mark.parametrize("name", ["../evil.py", "/abs/evil.py", "a\\..\\evil.py"])
def test_wheel_members_escaping_the_tree_are_refused(
    signed_wheels: dict[str, Path], trust: TrustStore, tmp_path: Path, name: str
) -> None:
    evil = rewrite_wheel(signed_wheels["textkit"], tmp_path / "e.whl", add={name: b"x"})
    err, reason = refused(verify_wheel_bytes, evil, trust, now=NOW)
    assert reason == "bad_wheel" and repr(name) in err.message


def test_wheel_signed_by_an_untrusted_key_is_refused_naming_the_key(
    built_wheels: dict[str, Path], other_key: PrivateKey, trust: TrustStore, tmp_path: Path
) -> None:
    wheel = sign_wheel(
        built_wheels["textkit"], other_key, permissions=Permissions(), out=tmp_path, now=SIGNED_AT
    )
    err, reason = refused(verify_wheel_bytes, wheel, trust, now=NOW)
    assert reason == "unknown_key" and other_key.key_id in err.message
    assert "mcphost keys trust" in err.message


def test_revocation_takes_effect_on_the_next_verification(
    signed_wheels: dict[str, Path], signing_key: PrivateKey, trust: TrustStore
) -> None:
    verify_wheel_bytes(signed_wheels["textkit"], trust, now=NOW)
    TrustStore(trust.dir).revoke(signing_key.key_id, "stolen")
    err, reason = refused(verify_wheel_bytes, signed_wheels["textkit"], trust, now=NOW)
    assert reason == "revoked_key" and signing_key.key_id in err.message


def test_expired_manifest_is_refused(signed_wheels: dict[str, Path], trust: TrustStore) -> None:
    err, reason = refused(
        verify_wheel_bytes, signed_wheels["textkit"], trust, now=SIGNED_AT + YEAR + 1
    )
    assert reason == "expired" and "expired" in err.message


def test_older_sequence_than_installed_is_refused_unless_allowed(
    signed_wheels: dict[str, Path], trust: TrustStore
) -> None:
    wheel = signed_wheels["textkit"]
    err, reason = refused(verify_wheel_bytes, wheel, trust, now=NOW, installed_sequence=6)
    assert reason == "rollback" and "sequence 5" in err.message
    verify_wheel_bytes(wheel, trust, now=NOW, installed_sequence=5)
    ok = verify_wheel_bytes(wheel, trust, now=NOW, installed_sequence=6, allow_older_sequence=True)
    assert ok.manifest.sequence == 5


def test_manifest_and_signature_taken_from_another_wheel_are_refused(
    signed_wheels: dict[str, Path], trust: TrustStore, tmp_path: Path
) -> None:
    other = signed_wheels["mathkit"]
    with zipfile.ZipFile(other) as zf:
        other_dist = next(n.split("/")[0] for n in zf.namelist() if ".dist-info/" in n)
    evil = rewrite_wheel(
        signed_wheels["textkit"],
        tmp_path / "e.whl",
        replace={
            f"{DIST}/{MANIFEST_NAME}": member(other, f"{other_dist}/{MANIFEST_NAME}"),
            f"{DIST}/{SIGNATURE_NAME}": member(other, f"{other_dist}/{SIGNATURE_NAME}"),
        },
    )
    err, reason = refused(verify_wheel_bytes, evil, trust, now=NOW)
    assert reason == "identity_mismatch" and "another wheel" in err.message


def test_older_signed_manifest_of_the_same_plugin_cannot_vouch_for_new_files(
    built_wheels: dict[str, Path],
    signing_key: PrivateKey,
    trust: TrustStore,
    tmp_path: Path,
    signed_wheels: dict[str, Path],
) -> None:
    older = sign_wheel(
        built_wheels["textkit"],
        signing_key,
        permissions=Permissions(),
        sequence=1,
        out=tmp_path / "older.whl",
        now=SIGNED_AT,
    )
    evil = rewrite_wheel(
        older,
        tmp_path / "e.whl",
        replace={INIT: b"import os; os.system('id')\n"},
    )
    err, reason = refused(verify_wheel_bytes, evil, trust, now=NOW)
    assert reason == "file_mismatch" and INIT in err.message


@pytest.mark.parametrize("cut", [1, 20, 60])
def test_truncated_signature_is_refused(
    signed_wheels: dict[str, Path], trust: TrustStore, tmp_path: Path, cut: int
) -> None:
    sig = json.loads(member(signed_wheels["textkit"], f"{DIST}/{SIGNATURE_NAME}"))
    raw = base64.b64decode(sig["signature"])
    sig["signature"] = base64.b64encode(raw[:-cut]).decode()
    evil = rewrite_wheel(
        signed_wheels["textkit"],
        tmp_path / "e.whl",
        replace={f"{DIST}/{SIGNATURE_NAME}": json.dumps(sig).encode()},
    )
    err, reason = refused(verify_wheel_bytes, evil, trust, now=NOW)
    assert reason == "bad_signature" and f"is {64 - cut} bytes" in err.message


def test_manifest_altered_after_signing_fails_the_signature(
    signed_wheels: dict[str, Path], trust: TrustStore, tmp_path: Path
) -> None:
    body = member(signed_wheels["textkit"], f"{DIST}/{MANIFEST_NAME}")
    altered = body.replace(b'"sequence":5', b'"sequence":9')
    assert altered != body
    evil = rewrite_wheel(
        signed_wheels["textkit"], tmp_path / "e.whl", replace={f"{DIST}/{MANIFEST_NAME}": altered}
    )
    err, reason = refused(verify_wheel_bytes, evil, trust, now=NOW)
    assert reason == "bad_signature" and "not valid" in err.message


def test_huge_manifest_is_refused_before_it_is_read(
    signed_wheels: dict[str, Path], trust: TrustStore, tmp_path: Path
) -> None:
    evil = rewrite_wheel(
        signed_wheels["textkit"],
        tmp_path / "e.whl",
        replace={f"{DIST}/{MANIFEST_NAME}": b" " * (MAX_MANIFEST_BYTES + 1)},
    )
    assert evil.stat().st_size < 100_000  # small on disk, endless when read
    err, reason = refused(verify_wheel_bytes, evil, trust, now=NOW)
    assert reason == "bad_wheel" and "cap" in err.message


def test_unsigned_wheel_is_refused_with_how_to_sign(
    built_wheels: dict[str, Path], trust: TrustStore
) -> None:
    err, reason = refused(verify_wheel_bytes, built_wheels["textkit"], trust, now=NOW)
    assert reason == "unsigned" and "mcphost plugin sign" in err.message


def test_not_a_zip_is_refused(trust: TrustStore) -> None:
    err, reason = refused(verify_wheel_bytes, b"PK\x03\x04 nonsense", trust, now=NOW)
    assert reason == "bad_wheel" and "not a valid wheel" in err.message


# -- installed trees ------------------------------------------------------------------


def test_installed_signed_plugin_tree_verifies(installed: Path, trust: TrustStore) -> None:
    report = VerificationReport(target="")
    manifest = verify_tree(installed, trust, now=NOW, report=report)
    assert manifest.name == "mcphost-textkit" and report.ok
    assert ("file", INIT, True) in {(c.check, c.subject, c.ok) for c in report.checks}


def test_tree_with_swapped_file_content_is_refused_naming_the_file(
    installed: Path, trust: TrustStore
) -> None:
    path = installed / INIT
    path.write_text(path.read_text() + "\n# changed\n")
    err, reason = refused(verify_tree, installed, trust, now=NOW)
    assert reason == "file_mismatch" and INIT in err.message


def test_tree_with_same_size_different_content_is_refused(
    installed: Path, trust: TrustStore
) -> None:
    path = installed / INIT
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))
    err, _ = refused(verify_tree, installed, trust, now=NOW)
    assert "sha256" in err.message


@pytest.mark.parametrize(
    "extra",
    [
        "mcphost_textkit/evil.py",
        "evil.pth",
        "sitecustomize.py",
        "mcphost_textkit/__pycache__/__init__.cpython-311.pyc",
        "mcphost_textkit/_x.so",
        "mcphost_textkit/libz.so.1",
    ],
)
def test_tree_with_an_unlisted_importable_file_is_refused(
    installed: Path, trust: TrustStore, extra: str
) -> None:
    (installed / extra).parent.mkdir(parents=True, exist_ok=True)
    (installed / extra).write_bytes(b"import os\n")
    err, reason = refused(verify_tree, installed, trust, now=NOW)
    assert reason == "unlisted_file" and extra in err.message


def test_unlisted_data_file_is_reported_and_refused_only_when_strict(
    installed: Path, trust: TrustStore
) -> None:
    (installed / "mcphost_textkit" / "notes.txt").write_text("hi")
    report = VerificationReport(target="")
    verify_tree(installed, trust, now=NOW, report=report)
    assert ("unlisted", "mcphost_textkit/notes.txt", True) in {
        (c.check, c.subject, c.ok) for c in report.checks
    }
    _, reason = refused(verify_tree, installed, trust, now=NOW, strict=True)
    assert reason == "unlisted_file"


def test_tree_with_a_symlink_is_refused(installed: Path, trust: TrustStore) -> None:
    os.symlink("/etc/passwd", installed / "mcphost_textkit" / "data.txt")
    err, reason = refused(verify_tree, installed, trust, now=NOW)
    assert reason == "link" and "mcphost_textkit/data.txt" in err.message


def test_tree_where_a_listed_file_is_replaced_by_a_symlink_is_refused(
    installed: Path, trust: TrustStore, tmp_path: Path
) -> None:
    real = tmp_path / "elsewhere.py"
    shutil.move(installed / INIT, real)
    os.symlink(real, installed / INIT)
    err, reason = refused(verify_tree, installed, trust, now=NOW)
    assert reason == "link" and INIT in err.message


def test_tree_with_a_hard_linked_file_is_refused(
    installed: Path, trust: TrustStore, tmp_path: Path
) -> None:
    os.link(installed / INIT, tmp_path / "outside-handle.py")
    err, reason = refused(verify_tree, installed, trust, now=NOW)
    assert reason == "link" and "hard links" in err.message


def test_tree_with_a_fifo_is_refused_without_blocking(installed: Path, trust: TrustStore) -> None:
    os.mkfifo(installed / "mcphost_textkit" / "pipe")
    err, reason = refused(verify_tree, installed, trust, now=NOW)
    assert reason == "special_file" and "mcphost_textkit/pipe" in err.message


def test_tree_with_a_missing_file_is_refused(installed: Path, trust: TrustStore) -> None:
    (installed / INIT).unlink()
    err, reason = refused(verify_tree, installed, trust, now=NOW)
    assert reason == "file_mismatch" and "missing" in err.message and INIT in err.message


def test_installed_tree_is_refused_once_its_key_is_revoked(
    installed: Path, trust: TrustStore, signing_key: PrivateKey
) -> None:
    verify_tree(installed, trust, now=NOW)
    trust.revoke(signing_key.key_id, "compromised")
    _, reason = refused(verify_tree, installed, trust, now=NOW)
    assert reason == "revoked_key"


def test_pip_install_with_bytecode_compilation_is_refused(
    signed_wheels: dict[str, Path], trust: TrustStore, tmp_path: Path
) -> None:
    target = tmp_path / "compiled"
    pip("install", "--no-deps", "--target", str(target), str(signed_wheels["textkit"]))
    err, reason = refused(verify_tree, target, trust, now=NOW)
    assert reason == "unlisted_file" and "__pycache__" in err.message


def test_a_tree_of_three_hundred_modules_in_thirty_packages_verifies_listing_every_module(
    tmp_path: Path, signing_key: PrivateKey, trust: TrustStore
) -> None:
    project = tmp_path / "bigplugin"
    pkg = project / "bigplugin"
    for i in range(30):
        sub = pkg / f"sub{i:02d}"
        sub.mkdir(parents=True)
        for j in range(10):
            (sub / f"mod{j}.py").write_text(f"# module {i}.{j}\n" + "x = 1\n" * (50 + i * j))
    (pkg / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "bigplugin"\nversion = "0.1"\n'
        '[tool.setuptools.packages.find]\ninclude = ["bigplugin*"]\n'
        '[tool.setuptools.package-data]\n"*" = ["*.py"]\n'
    )
    for i in range(30):
        (pkg / f"sub{i:02d}" / "__init__.py").write_text("")
    wheel = sign_wheel(
        build_wheel(project, tmp_path / "dist"),
        signing_key,
        permissions=Permissions(),
        out=tmp_path,
    )
    target = tmp_path / "t"
    pip("install", "--no-deps", "--no-compile", "--target", str(target), str(wheel))
    files = sum(1 for p in target.rglob("*") if p.is_file())
    assert files >= 300
    manifest = verify_tree(target, trust)
    modules = {str(p.relative_to(target)) for p in (target / "bigplugin").rglob("*.py")}
    assert len(modules) == 331
    assert modules <= {entry.path for entry in manifest.files}
    # How long this takes is measured, not asserted: benchmarks/bench_core.py
    # ("verify_tree before a start: textkit with 300 more modules").


def test_manifest_entry_points_must_match_the_wheels_own_metadata(
    signed_wheels: dict[str, Path], signing_key: PrivateKey, trust: TrustStore, tmp_path: Path
) -> None:
    wheel = signed_wheels["textkit"]
    archive = WheelArchive(wheel.read_bytes())
    manifest = build_manifest(archive, signing_key, permissions=Permissions(), now=SIGNED_AT)
    lying = msgspec.structs.replace(
        manifest, entry_points={"mcphost.plugins": {"textkit": "os:system"}}
    )
    body, sig = sign_manifest(lying, signing_key)
    evil = rewrite_wheel(
        wheel,
        tmp_path / "e.whl",
        replace={f"{DIST}/{MANIFEST_NAME}": body, f"{DIST}/{SIGNATURE_NAME}": sig},
    )
    err, reason = refused(verify_wheel_bytes, evil, trust, now=NOW)
    assert reason == "file_mismatch" and "entry_points.txt" in err.message


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_corrupted_byte_of_a_signed_wheel_is_refused_or_changes_nothing_verified(
    signed_wheels: dict[str, Path], trust: TrustStore, data: st.DataObject
) -> None:
    original = signed_wheels["textkit"].read_bytes()
    reference = verify_wheel_bytes(original, trust, now=NOW).members
    blob = bytearray(original)
    position = data.draw(st.integers(0, len(blob) - 1), label="position")
    blob[position] ^= data.draw(st.integers(1, 255), label="xor")
    try:
        verified = verify_wheel_bytes(bytes(blob), trust, now=NOW)
    except VerificationError:
        return
    # Only bytes outside what is verified (zip timestamps, attributes) may change.
    assert verified.members == reference


@settings(max_examples=100, deadline=None)
@given(blob=st.binary(max_size=2000))
def test_arbitrary_bytes_are_refused_with_a_verification_error(blob: bytes) -> None:
    with pytest.raises(VerificationError):
        verify_wheel_bytes(blob, TrustStore(Path("/nonexistent/keys")), now=NOW)


def test_files_from_the_wheels_data_directory_are_checked_where_pip_puts_them(
    tmp_path: Path, signing_key: PrivateKey, trust: TrustStore
) -> None:
    project = tmp_path / "withdata"
    (project / "withdata").mkdir(parents=True)
    (project / "withdata" / "__init__.py").write_text("VALUE = 1\n")
    (project / "words.txt").write_text("alpha\nbeta\n")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "withdata"\nversion = "0.1"\n'
        '[tool.setuptools]\npackages = ["withdata"]\n'
        'data-files = {"share/withdata" = ["words.txt"]}\n'
    )
    wheel = sign_wheel(
        build_wheel(project, tmp_path / "dist"),
        signing_key,
        permissions=Permissions(),
        out=tmp_path / "signed",
    )
    manifest = verify_wheel_bytes(wheel, trust).manifest
    assert "withdata-0.1.data/data/share/withdata/words.txt" in [f.path for f in manifest.files]
    target = tmp_path / "t"
    pip("install", "--no-deps", "--no-compile", "--target", str(target), str(wheel))
    report = VerificationReport(target="")
    verify_tree(target, trust, report=report, strict=True)
    assert ("file", "share/withdata/words.txt", True) in {
        (c.check, c.subject, c.ok) for c in report.checks
    }
    (target / "share" / "withdata" / "words.txt").write_text("changed\n")
    err, reason = refused(verify_tree, target, trust)
    assert reason == "file_mismatch" and "share/withdata/words.txt" in err.message
