"""The ``mcphost keys``, ``audit``, ``plugin sign`` and ``plugin verify`` commands."""

from __future__ import annotations

import functools
import json
import os
import re
import stat
import zipfile
from pathlib import Path

import pytest
from security_helpers import rewrite_wheel
from support.cli import invoke
from support.wheels import pip

INIT = "mcphost_textkit/__init__.py"


@pytest.fixture
def run(tmp_path: Path) -> object:
    home = tmp_path / "home"
    return functools.partial(invoke, home=home)


def audit(run: object) -> list[dict[str, object]]:
    result = run("audit", "--json")  # type: ignore[operator]
    assert result.exit_code == 0, result.output
    return json.loads(result.output)  # type: ignore[no-any-return]


def test_generate_writes_a_private_key_0600_and_prints_its_id(run: object, tmp_path: Path) -> None:
    result = run("keys", "generate", "alice", "--out", str(tmp_path / "k"))  # type: ignore[operator]
    assert result.exit_code == 0, result.output
    key_id = result.stdout.strip()
    assert key_id.startswith("ed25519:")
    key_file = tmp_path / "k" / "alice.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert (tmp_path / "k" / "alice.pub").is_file()
    again = run("keys", "generate", "alice", "--out", str(tmp_path / "k"))  # type: ignore[operator]
    assert again.exit_code != 0 and "already exists" in again.output
    assert [e["action"] for e in audit(run)] == ["key.generate"]


def test_generate_with_passphrase_encrypts_the_key(run: object, tmp_path: Path) -> None:
    result = run(  # type: ignore[operator]
        "keys",
        "generate",
        "bob",
        "--out",
        str(tmp_path),
        "--passphrase",
        input="s3cret\ns3cret\n",
    )
    assert result.exit_code == 0, result.output
    assert b"ENCRYPTED" in (tmp_path / "bob.key").read_bytes()


def test_trust_list_revoke_round_trip_is_audited(run: object, tmp_path: Path) -> None:
    key_id = run("keys", "generate", "alice", "--out", str(tmp_path)).stdout.strip()  # type: ignore[operator]
    trusted = run("keys", "trust", str(tmp_path / "alice.pub"), "--name", "Alice")  # type: ignore[operator]
    assert trusted.exit_code == 0 and trusted.stdout.strip() == key_id
    listed = json.loads(run("keys", "list", "--json").stdout)  # type: ignore[operator]
    assert [(k["key_id"], k["name"], k["revoked"]) for k in listed] == [(key_id, "Alice", False)]
    text = run("keys", "list").stdout  # type: ignore[operator]
    assert key_id in text and "trusted" in text
    revoked = run("keys", "revoke", key_id, "--reason", "laptop lost")  # type: ignore[operator]
    assert revoked.exit_code == 0, revoked.output
    assert "revoked" in run("keys", "list").stdout  # type: ignore[operator]
    bad = run("keys", "revoke", "ed25519:0000000000000000")  # type: ignore[operator]
    assert bad.exit_code == 2 and "not in the trust store" in bad.output
    entries = audit(run)
    assert [(e["action"], e["outcome"]) for e in entries] == [
        ("key.generate", "ok"),
        ("key.trust", "ok"),
        ("key.revoke", "ok"),
        ("key.revoke", "refused"),
    ]
    assert entries[2]["detail"] == "laptop lost"


def test_trusting_a_file_that_is_not_a_key_fails_and_is_audited(
    run: object, tmp_path: Path
) -> None:
    (tmp_path / "x.pub").write_text("hello")
    result = run("keys", "trust", str(tmp_path / "x.pub"))  # type: ignore[operator]
    assert result.exit_code == 2 and "not a PEM public key" in result.output
    assert audit(run)[-1]["outcome"] == "refused"


def test_sign_then_verify_prints_every_file_and_tamper_exits_1(
    run: object, tmp_path: Path, built_wheels: dict[str, Path]
) -> None:
    run(
        "keys",
        "generate",
        "pub",
        "--out",
        str(tmp_path),
        "--passphrase",  # type: ignore[operator]
        input="pw\npw\n",
    )
    run("keys", "trust", str(tmp_path / "pub.pub"))  # type: ignore[operator]
    perms = tmp_path / "perms.toml"
    perms.write_text('network = ["api.example.org:443"]\n')
    out_dir = tmp_path / "signed"
    out_dir.mkdir()
    signed = run(  # type: ignore[operator]
        "plugin",
        "sign",
        str(built_wheels["textkit"]),
        "--key",
        str(tmp_path / "pub.key"),
        "--permissions",
        str(perms),
        "--sequence",
        "7",
        "--out",
        str(out_dir),
        env={"MCPHOST_KEY_PASSPHRASE": "pw"},
    )
    assert signed.exit_code == 0, signed.output
    wheel = Path(signed.stdout.strip())
    assert wheel.parent == out_dir and zipfile.is_zipfile(wheel)

    ok = run("plugin", "verify", str(wheel))  # type: ignore[operator]
    assert ok.exit_code == 0, ok.output
    assert re.search(rf"ok +file +{INIT}", ok.output) and "verified" in ok.output

    with zipfile.ZipFile(wheel) as zf:
        original = zf.read(INIT)
    evil = rewrite_wheel(wheel, tmp_path / wheel.name, replace={INIT: original + b"#"})
    bad = run("plugin", "verify", str(evil))  # type: ignore[operator]
    assert bad.exit_code == 1
    assert re.search(rf"FAIL +file +{INIT}", bad.output) and "REFUSED" in bad.output
    (as_json,) = json.loads(run("plugin", "verify", "--json", str(evil)).stdout)  # type: ignore[operator]
    assert as_json["ok"] is False and as_json["reason"] == "file_mismatch"

    actions = [(e["action"], e["outcome"]) for e in audit(run)]
    assert ("plugin.sign", "ok") in actions
    assert actions.count(("plugin.verify", "refused")) == 2


def test_audit_command_prints_one_line_per_entry(run: object, tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()  # a new, empty home
    assert "empty" in run("audit").stdout  # type: ignore[operator]
    run("keys", "generate", "a", "--out", str(tmp_path))  # type: ignore[operator]
    run("keys", "trust", str(tmp_path / "a.pub"))  # type: ignore[operator]
    lines = run("audit").stdout.splitlines()  # type: ignore[operator]
    assert len(lines) == 2 and "key.trust" in lines[1]
    assert len(run("audit", "--limit", "1").stdout.splitlines()) == 1  # type: ignore[operator]


def test_verify_an_installed_plugin_directory_file_by_file(
    run: object, tmp_path: Path, built_wheels: dict[str, Path]
) -> None:
    run("keys", "generate", "pub", "--out", str(tmp_path))  # type: ignore[operator]
    run("keys", "trust", str(tmp_path / "pub.pub"))  # type: ignore[operator]
    signed = run(  # type: ignore[operator]
        "plugin",
        "sign",
        str(built_wheels["textkit"]),
        "--key",
        str(tmp_path / "pub.key"),
        "--out",
        str(tmp_path),
    )
    assert signed.exit_code == 0, signed.output
    target = tmp_path / "installed"
    pip("install", "--no-deps", "--no-compile", "--target", str(target), signed.stdout.strip())
    ok = run("plugin", "verify", str(target))  # type: ignore[operator]
    assert ok.exit_code == 0, ok.output
    assert re.search(rf"ok +file +{INIT}", ok.output)
    (target / "mcphost_textkit" / "backdoor.py").write_text("import os\n")
    bad = run("plugin", "verify", str(target))  # type: ignore[operator]
    assert bad.exit_code == 1
    assert re.search(r"FAIL +unlisted +mcphost_textkit/backdoor.py", bad.output)
