"""The registry's records and rules, through its API and real files: versions side by
side, ownership by key, content never changing under a version, rollback, removal."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from registry_helpers import textkit_variant, trust_key
from support.wheels import build_wheel

from mcphost.host import Home
from mcphost.registry import SCHEMA_VERSION, Registry
from mcphost.sdk.errors import PluginNotFound, RegistryError, VerificationError
from mcphost.security import Permissions, PrivateKey, generate_key, sign_wheel


def install(
    reg: Registry, wheel: Path, *, activate: bool = True, allow_key_change: bool = False
) -> str:
    checked = reg.check(wheel, allow_key_change=allow_key_change)
    return reg.install(checked, activate=activate, allow_key_change=allow_key_change).version


def audit(home: Home) -> list[dict[str, object]]:
    return [json.loads(line) for line in home.audit_log.read_text().splitlines()]


def test_two_versions_are_installed_side_by_side_each_in_its_own_read_only_directory(
    home: Home, wheels: dict[str, Path]
) -> None:
    with Registry.open(home) as reg:
        install(reg, wheels["1.0"])
        install(reg, wheels["1.1"], activate=False)
        plugin = reg.plugin("textkit")
        assert plugin.versions == ["1.0.0", "1.1.0"]
        assert plugin.active_version == "1.0.0"
        v10, v11 = reg.versions("textkit")
        assert v10.root != v11.root
        for rec in (v10, v11):
            code = Path(rec.plugin_dir) / "mcphost_textkit" / "__init__.py"
            assert code.is_file()
            assert code.stat().st_mode & 0o222 == 0, "installed code must be read-only"
            assert Path(rec.dist_info, "mcphost.manifest").is_file()
        assert "[1.1]" in (Path(v11.plugin_dir) / "mcphost_textkit/__init__.py").read_text()
        assert "[1.1]" not in (Path(v10.plugin_dir) / "mcphost_textkit/__init__.py").read_text()
        # The wheels are kept by content.
        assert (home.store_dir / f"{v10.wheel_sha256}.whl").is_file()
        assert v10.key_id == v11.key_id is not None


def test_a_version_is_found_by_its_value_and_a_missing_one_lists_what_is_installed(
    home: Home, wheels: dict[str, Path]
) -> None:
    with Registry.open(home) as reg:
        install(reg, wheels["1.0"])
        install(reg, wheels["1.1"], activate=False)
        assert reg.version("textkit", "1.1").version == "1.1.0"
        with pytest.raises(RegistryError) as err:
            reg.version("textkit", "2.0")
        assert err.value.message == (
            "no version 2.0 of textkit is installed; installed: 1.0.0, 1.1.0"
        )
        with pytest.raises(PluginNotFound, match="installed: textkit"):
            reg.plugin("nosuch")


def test_the_same_version_with_different_content_is_refused(
    home: Home, wheels: dict[str, Path], signing_key: PrivateKey, tmp_path: Path
) -> None:
    # Same name and version as 1.1, but other code: rebuilt from a changed copy.
    project = textkit_variant(tmp_path / "evil", "1.1.0", echo_suffix=" [evil]")
    other = sign_wheel(
        build_wheel(project, tmp_path / "w"),
        signing_key,
        permissions=Permissions(),
        sequence=20,
        out=tmp_path / "w2.whl",
    )
    with Registry.open(home) as reg:
        install(reg, wheels["1.1"])
        with pytest.raises(RegistryError, match="installed already from a different wheel"):
            install(reg, other)
        # Installing the very same wheel again is fine and changes nothing.
        again = reg.install(reg.check(wheels["1.1"]))
        assert not again.installed
        assert reg.plugin("textkit").versions == ["1.1.0"]
    assert any(e["action"] == "plugin.install" and e["outcome"] == "refused" for e in audit(home))


def test_a_plugin_name_belongs_to_the_key_that_first_installed_it(
    home: Home, wheels: dict[str, Path], tmp_path: Path
) -> None:
    intruder = generate_key()
    trust_key(home, intruder)
    forged = sign_wheel(
        wheels["1.1-unsigned"],
        intruder,
        permissions=Permissions(),
        sequence=50,
        out=tmp_path / "forged.whl",
    )
    with Registry.open(home) as reg:
        install(reg, wheels["1.0"])
        owner = reg.plugin("textkit").owner_key
        with pytest.raises(RegistryError, match=f"belongs to key {owner}.*--allow-key-change"):
            install(reg, forged)
        assert reg.plugin("textkit").versions == ["1.0.0"]
        install(reg, forged, allow_key_change=True)
        assert reg.plugin("textkit").owner_key == intruder.key_id


def test_an_unsigned_wheel_is_refused_unless_the_configuration_allows_it(
    home: Home, wheels: dict[str, Path]
) -> None:
    with Registry.open(home) as reg, pytest.raises(VerificationError, match="not signed"):
        install(reg, wheels["1.0-unsigned"])
    assert audit(home)[-1]["outcome"] == "refused"
    with Registry.open(home, allow_unsigned=True) as reg:
        checked = reg.check(wheels["1.0-unsigned"])
        assert checked.warnings and "not signed" in checked.warnings[0]
        reg.install(checked)
        assert reg.version("textkit", "1.0").key_id is None


def test_a_manifest_older_than_one_installed_is_refused_as_a_rollback_attack(
    home: Home, wheels: dict[str, Path], signing_key: PrivateKey, tmp_path: Path
) -> None:
    stale = sign_wheel(
        wheels["1.0-unsigned"],
        signing_key,
        permissions=Permissions(),
        sequence=3,
        out=tmp_path / "stale.whl",
    )
    with Registry.open(home) as reg:
        install(reg, wheels["1.1"])  # sequence 11
        with pytest.raises(RegistryError, match="older than sequence 11"):
            install(reg, stale)


def test_rollback_returns_to_the_version_active_before_and_history_says_who_and_why(
    home: Home, wheels: dict[str, Path]
) -> None:
    with Registry.open(home) as reg:
        install(reg, wheels["1.0"])
        install(reg, wheels["1.1"], activate=False)
        install(reg, wheels["1.2"], activate=False)
        reg.activate("textkit", "1.1", reason="new echo")
        reg.activate("textkit", "1.2")
        assert reg.rollback_target("textkit") == "1.1.0"
        back = reg.rollback("textkit", reason="1.2 misbehaves")
        assert (back.from_version, back.to_version, back.action) == ("1.2.0", "1.1.0", "rollback")
        assert back.reason == "1.2 misbehaves" and back.user
        reg.rollback("textkit", to="1.0")
        assert reg.plugin("textkit").active_version == "1.0.0"
        actions = [(h.action, h.from_version, h.to_version) for h in reg.history("textkit")]
        assert ("swap", "1.0.0", "1.1.0") in actions
        assert actions[-1] == ("rollback", "1.1.0", "1.0.0")
        with pytest.raises(RegistryError, match="active version already"):
            reg.rollback("textkit", to="1.0.0")
        reg.activate("textkit", "1.2")
        reg.remove("textkit", "1.0")
        with pytest.raises(
            RegistryError, match="the version active before 1\\.2\\.0, is no longer"
        ):
            reg.rollback("textkit")


def test_removing_the_active_version_needs_force_and_deletes_its_files(
    home: Home, wheels: dict[str, Path]
) -> None:
    with Registry.open(home) as reg:
        install(reg, wheels["1.0"])
        install(reg, wheels["1.1"], activate=False)
        with pytest.raises(RegistryError, match="is the active version; swap to another"):
            reg.remove("textkit", "1.0")
        old_root = Path(reg.version("textkit", "1.1").root)
        sha = reg.version("textkit", "1.1").wheel_sha256
        assert reg.remove("textkit", "1.1") == ["1.1.0"]
        assert not old_root.exists()
        assert not (home.store_dir / f"{sha}.whl").exists()
        assert reg.remove("textkit", force=True) == ["1.0.0"]
        assert reg.plugins() == []
        assert reg.active() == []
    assert [e["action"] for e in audit(home)].count("plugin.remove") == 2


def test_an_older_database_is_migrated_forward_on_open(home: Home) -> None:
    Registry.open(home).close()
    conn = sqlite3.connect(home.registry_db)
    conn.execute("ALTER TABLE versions DROP COLUMN deps_files")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with Registry.open(home) as reg:
        assert reg.ready
        columns = [r[1] for r in reg.conn.execute("PRAGMA table_info(versions)")]
        assert "deps_files" in columns


def test_the_database_is_versioned_and_a_newer_schema_is_refused(home: Home) -> None:
    Registry.open(home).close()
    conn = sqlite3.connect(home.registry_db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RegistryError, match="upgrade mcphost"):
        Registry.open(home)


def test_a_wheel_without_exactly_one_plugin_entry_point_is_refused(
    home: Home, tmp_path: Path
) -> None:
    project = textkit_variant(tmp_path / "noep", "1.0.0")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            '[project.entry-points."mcphost.plugins"]\ntextkit = "mcphost_textkit:plugin"\n', ""
        )
    )
    wheel = build_wheel(project, tmp_path / "w")
    with (
        Registry.open(home, allow_unsigned=True) as reg,
        pytest.raises(RegistryError, match="declares 0 entry points"),
    ):
        reg.check(wheel)


def test_a_host_reads_a_database_of_the_previous_schema_until_a_change_migrates_it(
    home: Home, wheels: dict[str, Path]
) -> None:
    from mcphost.host.registry_link import registry_sources

    with Registry.open(home) as reg:
        install(reg, wheels["1.0"])
    conn = sqlite3.connect(home.registry_db)
    conn.execute("DROP TABLE pending")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    assert [(s.name, s.version) for s in registry_sources(home)] == [("textkit", "1.0.0")]
    with Registry.open(home) as reg:
        assert reg.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert reg.plugin("textkit").active_version == "1.0.0"
