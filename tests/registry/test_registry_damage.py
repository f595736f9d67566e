"""A registry database that is lost, emptied or damaged next to installed versions: every
command refuses to change anything and says so, nothing is deleted, and
``mcphost registry rebuild`` brings the records back from the store's signed wheels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from registry_helpers import cli_json, textkit_variant, trust_key
from support.cli import run_mcphost
from support.wheels import build_wheel

from mcphost.host import Home
from mcphost.security import Permissions, PrivateKey, generate_key, sign_wheel


def files_of(home: Home) -> set[str]:
    """Every file and directory under versions/ and store/, relative to the home."""
    return {
        str(p.relative_to(home.root))
        for top in (home.versions_dir, home.store_dir)
        for p in top.rglob("*")
    }


@pytest.fixture(scope="session")
def installed(
    tmp_path_factory: pytest.TempPathFactory, wheels: dict[str, Path], signing_key: PrivateKey
) -> Home:
    """textkit 1.0 installed, then 1.1 (active), then 1.2 not activated."""
    home = Home(tmp_path_factory.mktemp("damage-template") / "home").ensure()
    trust_key(home, signing_key)
    for args in (
        ["plugin", "install", str(wheels["1.0"]), "--yes"],
        ["plugin", "install", str(wheels["1.1"]), "--yes"],
        ["plugin", "install", str(wheels["1.2"]), "--yes", "--no-activate"],
    ):
        proc = run_mcphost(*args, home=home)
        assert proc.returncode == 0, proc.stderr
    return home


@pytest.fixture
def home_copy(installed: Home, tmp_path: Path) -> Home:
    dest = tmp_path / "home"
    shutil.copytree(installed.root, dest, symlinks=True)
    return Home(dest)


@pytest.fixture(scope="session")
def textkit_13(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """textkit 1.3.0, built but not signed."""
    tmp = tmp_path_factory.mktemp("textkit-13")
    return build_wheel(textkit_variant(tmp / "src", "1.3.0"), tmp / "raw")


def lose_database(home: Home, how: str) -> None:
    if how == "emptied":
        home.registry_db.write_bytes(b"")
    else:
        home.registry_db.rename(home.root / "registry.sqlite3.away")


@pytest.mark.parametrize("how", ["emptied", "moved away"])
def test_a_lost_database_next_to_installed_versions_deletes_nothing_and_points_at_rebuild(
    how: str, home_copy: Home, wheels: dict[str, Path]
) -> None:
    home = home_copy
    before = files_of(home)
    assert any(p.endswith(".whl") for p in before)
    lose_database(home, how)
    for args in (
        ["plugin", "list"],
        ["plugin", "install", str(wheels["1.0"]), "--yes"],
        ["plugin", "remove", "textkit", "--force"],
        ["tools"],
    ):
        proc = run_mcphost(*args, home=home)
        assert proc.returncode == 1, (args, proc.stdout)
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("error [registry_damaged]: "), line
        assert "mcphost registry rebuild" in line and "move it away" not in line
        assert "Traceback" not in proc.stderr
    assert files_of(home) == before


def test_rebuild_restores_versions_active_version_rollback_ownership_and_sequences(
    home_copy: Home,
    wheels: dict[str, Path],
    signing_key: PrivateKey,
    textkit_13: Path,
    tmp_path: Path,
) -> None:
    home = home_copy
    listed_before = cli_json(home, "plugin", "list")
    lose_database(home, "emptied")
    proc = run_mcphost("registry", "rebuild", home=home)
    assert proc.returncode == 0, proc.stderr
    assert "textkit 1.0.0, 1.1.0, 1.2.0" in proc.stdout
    assert cli_json(home, "plugin", "list") == listed_before
    assert listed_before[0]["active"] == "1.1.0"  # from the audit log, not the highest
    info = cli_json(home, "plugin", "info", "textkit")
    assert [v["sequence"] for v in info["versions"]] == [10, 11, 12]
    assert all(v["tools"] for v in info["versions"])
    # Rollback protection: a new version with a lower sequence than 1.2's is refused.
    older = sign_wheel(
        textkit_13, signing_key, permissions=Permissions(), sequence=5, out=tmp_path / "a"
    )
    proc = run_mcphost("plugin", "install", str(older), "--yes", home=home)
    assert proc.returncode == 1 and "rollback attack" in proc.stderr, proc.stderr
    # Name ownership: another trusted key may not take the name over.
    other = generate_key()
    trust_key(home, other)
    foreign = sign_wheel(textkit_13, other, permissions=Permissions(), sequence=99, out=tmp_path)
    proc = run_mcphost("plugin", "install", str(foreign), "--yes", home=home)
    assert proc.returncode == 1 and "belongs to key" in proc.stderr, proc.stderr
    # Rollback goes back to the version active before, as the audit log remembers it.
    proc = run_mcphost("plugin", "rollback", "textkit", home=home)
    assert proc.returncode == 0, proc.stderr
    assert cli_json(home, "plugin", "list")[0]["active"] == "1.0.0"
    assert run_mcphost("plugin", "rollback", "textkit", home=home).returncode == 0
    # Swaps and rollbacks work as before.
    proc = run_mcphost("plugin", "swap", "textkit", "1.2", "--allow-missing-tools", home=home)
    assert proc.returncode == 0, proc.stderr
    # (1.1 has the tool 1.2 lacks: showing it again is approved with --yes.)
    assert run_mcphost("plugin", "rollback", "textkit", "--yes", home=home).returncode == 0
    assert cli_json(home, "plugin", "list")[0]["active"] == "1.1.0"
    actions = [e["action"] for e in json.loads(run_mcphost("audit", "--json", home=home).stdout)]
    assert "registry.rebuild" in actions


def test_rebuild_refuses_a_healthy_registry_unless_forced(home_copy: Home) -> None:
    proc = run_mcphost("registry", "rebuild", home=home_copy)
    assert proc.returncode == 1
    assert "--force" in proc.stderr
    proc = run_mcphost("registry", "rebuild", "--force", home=home_copy)
    assert proc.returncode == 0, proc.stderr
    assert cli_json(home_copy, "plugin", "list")[0]["versions"] == ["1.0.0", "1.1.0", "1.2.0"]


def test_a_fresh_database_in_place_of_the_old_one_deletes_nothing(
    home_copy: Home, tmp_path: Path
) -> None:
    home = home_copy
    before = files_of(home)
    empty = Home(tmp_path / "empty").ensure()
    assert run_mcphost("plugin", "list", home=empty).returncode == 0
    shutil.copy(empty.registry_db, home.registry_db)
    for args in (["plugin", "list"], ["tools"]):
        proc = run_mcphost(*args, home=home)
        assert proc.returncode == 1, proc.stdout
        assert "error [registry_damaged]" in proc.stderr and "registry rebuild" in proc.stderr
    assert files_of(home) == before


def test_a_database_restored_from_an_older_backup_keeps_the_versions_installed_since(
    home_copy: Home, wheels: dict[str, Path], tmp_path: Path
) -> None:
    home = home_copy
    with_two = tmp_path / "backup.sqlite3"
    assert run_mcphost("plugin", "remove", "textkit", "1.2", home=home).returncode == 0
    shutil.copy(home.registry_db, with_two)
    proc = run_mcphost("plugin", "install", str(wheels["1.2"]), "--yes", "--no-activate", home=home)
    assert proc.returncode == 0, proc.stderr
    before = files_of(home)
    shutil.copy(with_two, home.registry_db)
    listed = cli_json(home, "plugin", "list")
    assert listed[0]["versions"] == ["1.0.0", "1.1.0"]
    assert files_of(home) == before  # 1.2's directory and wheel are still there
    proc = run_mcphost("registry", "rebuild", "--force", home=home)
    assert proc.returncode == 0, proc.stderr
    assert cli_json(home, "plugin", "list")[0]["versions"] == ["1.0.0", "1.1.0", "1.2.0"]


def test_rebuild_records_only_wheels_that_verify_against_the_trust_store(
    home_copy: Home, signing_key: PrivateKey
) -> None:
    home = home_copy
    before = files_of(home)
    lose_database(home, "emptied")
    proc = run_mcphost("keys", "revoke", signing_key.key_id, "--reason", "test", home=home)
    assert proc.returncode == 0, proc.stderr
    proc = run_mcphost("registry", "rebuild", "--json", home=home)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["plugins"] == {}
    reasons = [why for path, why in out["skipped"].items() if path.endswith(".whl")]
    assert len(reasons) == 3 and all("revoked" in why for why in reasons), reasons
    assert files_of(home) == before
