"""``mcphost plugin ...`` and ``mcphost config show`` as an operator uses them."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from registry_helpers import CliFn, textkit_variant
from support.wheels import build_wheel

from mcphost.host import Home, Host
from mcphost.registry import Registry
from mcphost.sdk.errors import VerificationError
from mcphost.security import Permissions, PrivateKey, TrustStore, sign_wheel


def test_install_off_a_terminal_shows_the_permissions_and_needs_yes(
    cli: CliFn, home: Home, wheels: dict[str, Path]
) -> None:
    result = cli("plugin", "install", str(wheels["1.0"]))
    assert result.exit_code == 2
    assert "network: none" in result.stderr
    assert "--yes" in result.stderr
    assert not home.registry_db.exists() or Registry.open(home).plugins() == []


def test_list_and_info_print_the_documented_json(
    cli: CliFn, wheels: dict[str, Path], signing_key: PrivateKey
) -> None:
    assert cli("plugin", "install", str(wheels["1.0"]), "--yes").exit_code == 0
    result = cli("plugin", "install", str(wheels["1.1"]), "--yes", "--json")
    assert result.exit_code == 0, result.output
    installed = json.loads(result.stdout)
    assert installed["previous"] == "1.0.0" and installed["active"] is True
    assert "echo" in installed["tools"]
    listed = json.loads(cli("plugin", "list", "--json").stdout)
    assert listed == [
        {
            "name": "textkit",
            "active": "1.1.0",
            "versions": ["1.0.0", "1.1.0"],
            "owner_key": signing_key.key_id,
        }
    ]
    info = json.loads(cli("plugin", "info", "textkit", "--json").stdout)
    assert set(info) == {"name", "active", "owner_key", "versions", "history"}
    assert set(info["versions"][0]) == {
        "version",
        "active",
        "dist_name",
        "key_id",
        "sequence",
        "wheel_sha256",
        "wheel_name",
        "installed_at",
        "installed_by",
        "path",
        "permissions",
        "tools",
        "approved",
    }
    assert set(info["versions"][0]["approved"]) == {"at", "by"}
    assert [h["action"] for h in info["history"]] == ["install", "activate", "install", "activate"]
    assert set(info["history"][0]) == {
        "plugin",
        "at",
        "user",
        "action",
        "from_version",
        "to_version",
        "reason",
    }


def test_a_swap_to_a_version_not_installed_says_which_are(
    cli: CliFn, wheels: dict[str, Path]
) -> None:
    cli("plugin", "install", str(wheels["1.0"]), "--yes")
    cli("plugin", "install", str(wheels["1.1"]), "--yes", "--no-activate")
    result = cli("plugin", "swap", "textkit", "2.0")
    assert result.exit_code == 1
    assert "no version 2.0 of textkit is installed; installed: 1.0.0, 1.1.0" in result.stderr
    assert cli("plugin", "swap").exit_code == 2  # usage


def test_a_swap_that_would_lose_a_tool_is_refused_unless_allowed(
    cli: CliFn, wheels: dict[str, Path]
) -> None:
    cli("plugin", "install", str(wheels["1.0"]), "--yes")
    result = cli("plugin", "install", str(wheels["1.2"]), "--yes")
    assert result.exit_code == 1
    assert "lacks tools that textkit 1.0.0 has: sleep" in result.stderr
    assert "--allow-missing-tools" in result.stderr
    listed = json.loads(cli("plugin", "list", "--json").stdout)
    assert listed[0]["active"] == "1.0.0" and listed[0]["versions"] == ["1.0.0", "1.2.0"]
    result = cli("plugin", "swap", "textkit", "1.2", "--allow-missing-tools", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["missing_tools"] == ["sleep"]
    # Going back shows clients ``sleep`` again: an added tool is approved first.
    result = cli("plugin", "rollback", "textkit", "--json")
    assert result.exit_code == 2 and "approval_required" in result.stderr
    result = cli("plugin", "rollback", "textkit", "--yes", "--json")
    out = json.loads(result.stdout)
    assert out["to"] == "1.0.0" and out["descriptions_changed"] == ["tool sleep: added"]


def test_a_tampered_installed_file_fails_verify_and_is_refused_at_start(
    cli: CliFn, home: Home, wheels: dict[str, Path]
) -> None:
    cli("plugin", "install", str(wheels["1.0"]), "--yes")
    assert cli("plugin", "verify", "textkit").exit_code == 0
    code = Path(
        Registry.open(home).version("textkit", "1.0").plugin_dir, "mcphost_textkit", "__init__.py"
    )
    os.chmod(code, 0o644)
    code.write_text(code.read_text() + "\nimport os  # added after install\n")
    result = cli("plugin", "verify", "textkit")
    assert result.exit_code == 1
    assert "FAIL" in result.stdout and "mcphost_textkit/__init__.py" in result.stdout

    async def call() -> None:
        async with Host(home, environment=False) as host:
            await host.call("textkit.upper", {"text": "x"})

    with pytest.raises(VerificationError, match=r"mcphost_textkit/__init__\.py"):
        asyncio.run(call())
    # The audit log says which check refused it: the operator's verify, then a start.
    audit = json.loads(cli("audit", "--json").stdout)
    refused = [e["action"] for e in audit if e["outcome"] == "refused"]
    assert refused == ["plugin.verify", "plugin.start"]


def test_a_revoked_key_stops_plugins_it_signed_that_are_installed(
    cli: CliFn, home: Home, wheels: dict[str, Path], signing_key: PrivateKey
) -> None:
    cli("plugin", "install", str(wheels["1.0"]), "--yes")
    TrustStore(home.keys_dir).revoke(signing_key.key_id, "leaked")

    async def call() -> None:
        async with Host(home, environment=False) as host:
            await host.call("textkit.upper", {"text": "x"})

    with pytest.raises(VerificationError, match="revoked"):
        asyncio.run(call())


def test_an_unsigned_plugin_installs_and_runs_only_when_the_configuration_allows_it(
    cli: CliFn, home: Home, wheels: dict[str, Path]
) -> None:
    result = cli("plugin", "install", str(wheels["1.0-unsigned"]), "--yes")
    assert result.exit_code == 1 and "not signed" in result.stderr
    home.config_file.write_text("allow_unsigned = true\n")
    result = cli("plugin", "install", str(wheels["1.0-unsigned"]), "--yes")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "UNSIGNED" in result.stdout
    home.config_file.write_text("allow_unsigned = false\n")

    async def call() -> None:
        async with Host(home, environment=False) as host:
            await host.call("textkit.upper", {"text": "x"})

    with pytest.raises(VerificationError, match="does not allow unsigned plugins"):
        asyncio.run(call())


def test_dependencies_are_installed_from_wheels_beside_the_plugin(
    cli: CliFn, home: Home, tmp_path: Path, signing_key: PrivateKey
) -> None:
    dep = tmp_path / "regdep"
    (dep / "regdep").mkdir(parents=True)
    (dep / "regdep" / "__init__.py").write_text("ANSWER = 42\n")
    (dep / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "regdep"\nversion = "0.1"\n[tool.setuptools]\npackages = ["regdep"]\n'
    )
    links = tmp_path / "links"
    build_wheel(dep, links)
    project = textkit_variant(
        tmp_path / "withdep",
        "1.5.0",
        requires=["regdep>=0.1"],
        extra_code='\n\n@plugin.tool\ndef answer() -> int:\n    """From a dependency."""\n'
        "    import regdep\n\n    return regdep.ANSWER\n",
    )
    wheel = sign_wheel(
        build_wheel(project, tmp_path / "w"),
        signing_key,
        permissions=Permissions(),
        sequence=1,
        out=tmp_path / "signed.whl",
    )
    result = cli("plugin", "install", str(wheel), "--yes", "--find-links", str(links))
    assert result.exit_code == 0, result.output
    rec = Registry.open(home).version("textkit", "1.5")
    assert (Path(rec.deps_dir) / "regdep" / "__init__.py").is_file()
    assert not (Path(rec.plugin_dir) / "regdep").exists()

    async def call() -> object:
        async with Host(home, environment=False) as host:
            return await host.call("textkit.answer", {})

    assert asyncio.run(call()) == 42
    # No signature covers the dependencies: the registry's record of them does.
    dep_code = Path(rec.deps_dir) / "regdep" / "__init__.py"
    os.chmod(dep_code, 0o644)
    dep_code.write_text("ANSWER = 666\n")
    result = cli("plugin", "verify", "textkit")
    assert result.exit_code == 1 and "regdep/__init__.py was changed" in result.stdout
    with pytest.raises(VerificationError, match="dependencies changed"):
        asyncio.run(call())


def test_config_show_names_where_each_value_came_from(cli: CliFn, home: Home) -> None:
    home.config_file.write_text("drain_timeout = 3.0\n[limits]\nmemory_mb = 512\n")
    result = cli("config", "show", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["key"]: r for r in json.loads(result.stdout)["settings"]}
    assert rows["drain_timeout"] == {
        "key": "drain_timeout",
        "value": 3.0,
        "source": str(home.config_file),
    }
    assert rows["limits.memory_mb"]["source"] == str(home.config_file)
    assert rows["limits.cpu_seconds"]["source"] == "default"
    assert rows["allow_unsigned"] == {"key": "allow_unsigned", "value": False, "source": "default"}
    text = cli("config", "show").stdout
    assert "drain_timeout = 3.0" in text and "# default" in text
    home.config_file.write_text("drain_timeuot = 3\n")
    result = cli("config", "show")
    assert result.exit_code == 2 and "drain_timeuot" in result.stderr


def test_every_change_is_written_to_the_audit_log(
    cli: CliFn, home: Home, wheels: dict[str, Path]
) -> None:
    cli("plugin", "install", str(wheels["1.0"]), "--yes")
    cli("plugin", "install", str(wheels["1.1"]), "--yes", "--no-activate")
    cli("plugin", "swap", "textkit", "1.1")
    cli("plugin", "rollback", "textkit")
    cli("plugin", "remove", "textkit", "1.1")
    cli("plugin", "install", str(wheels["1.0-unsigned"]), "--yes")
    entries = [json.loads(line) for line in home.audit_log.read_text().splitlines()]
    plugin_entries = [
        (e["action"], e.get("version"), e["outcome"])
        for e in entries
        if e["action"].startswith("plugin.")
    ]
    assert plugin_entries == [
        ("plugin.install", "1.0.0", "ok"),
        ("plugin.activate", "1.0.0", "ok"),
        ("plugin.install", "1.1.0", "ok"),
        ("plugin.swap", "1.1.0", "ok"),
        ("plugin.rollback", "1.0.0", "ok"),
        ("plugin.remove", "1.1.0", "ok"),
        ("plugin.install", "1.0.0", "refused"),
    ]
    assert all(e["actor"] for e in entries)


def test_a_plugin_the_policy_denies_is_refused_before_anything_is_installed(
    cli: CliFn, home: Home, wheels: dict[str, Path], signing_key: PrivateKey, tmp_path: Path
) -> None:
    wants_network = sign_wheel(
        wheels["1.0-unsigned"],
        signing_key,
        permissions=Permissions(network=["api.example.org:443"]),
        sequence=10,
        out=tmp_path / wheels["1.0"].name,
    )
    home.config_file.write_text("[policy]\nnetwork = false\n")
    result = cli("plugin", "install", str(wants_network), "--yes")
    assert result.exit_code == 1
    assert "api.example.org:443" in result.stderr and "policy.network = false" in result.stderr
    assert json.loads(cli("plugin", "list", "--json").stdout) == []
    last = json.loads(home.audit_log.read_text().splitlines()[-1])
    assert (last["action"], last["outcome"]) == ("plugin.install", "refused")


def test_install_refuses_to_run_a_plugin_without_namespaces_when_the_config_requires_them(
    cli: CliFn, home: Home, wheels: dict[str, Path]
) -> None:
    home.config_file.write_text('isolation = "rlimits"\nrequire_namespaces = true\n')
    result = cli("plugin", "install", str(wheels["1.0"]), "--yes")
    assert result.exit_code == 2, result.output  # the configuration is what needs a change
    assert "require_namespaces = true" in result.stderr
    assert "isolation = 'rlimits'" in result.stderr
    assert not home.registry_db.exists() or Registry.open(home).plugins() == []
