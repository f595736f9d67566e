"""A clash between two plugins' exposed tool names is refused by the CLI at install,
swap and ``config set``, naming both plugins; nothing changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from registry_helpers import cli_json
from support.cli import run_mcphost

from mcphost.host import Home
from mcphost.security import Permissions, PrivateKey, sign_wheel


@pytest.fixture(scope="module")
def mathkit(
    example_wheels: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    signing_key: PrivateKey,
) -> Path:
    out = tmp_path_factory.mktemp("mathkit-signed")
    return sign_wheel(example_wheels["mathkit"], signing_key, permissions=Permissions(), out=out)


def test_install_swap_and_config_set_refuse_a_clash_naming_both_plugins(
    home: Home, wheels: dict[str, Path], mathkit: Path
) -> None:
    home.config_file.write_text(
        '[plugins.textkit]\nexpose = "bare"\n\n[plugins.mathkit.tools.is_prime]\nname = "upper"\n'
    )
    proc = run_mcphost("plugin", "install", str(wheels["1.0"]), "--yes", home=home)
    assert proc.returncode == 0, proc.stderr
    proc = run_mcphost("plugin", "install", str(mathkit), "--yes", home=home)
    assert proc.returncode == 2, proc.stderr
    assert "error [name_clash]" in proc.stderr
    assert (
        "the tool name 'upper' would be both tool upper of plugin textkit and tool is_prime "
        "of plugin mathkit" in proc.stderr
    )
    assert "[plugins.mathkit.tools.is_prime]" in proc.stderr
    plugins = {p["name"]: p["active"] for p in cli_json(home, "plugin", "list")}
    assert plugins == {"textkit": "1.0.0", "mathkit": None}

    # Without the rename it activates; setting the rename then is refused.
    home.config_file.write_text('[plugins.textkit]\nexpose = "bare"\n')
    proc = run_mcphost("plugin", "swap", "mathkit", "1.0.0", home=home)
    assert proc.returncode == 0, proc.stderr
    before = home.config_file.read_text()
    proc = run_mcphost("config", "set", "plugins.mathkit.tools.is_prime.name", "upper", home=home)
    assert proc.returncode == 2
    assert "error [name_clash]" in proc.stderr
    assert "tool upper of plugin textkit" in proc.stderr
    assert "tool is_prime of plugin mathkit" in proc.stderr
    assert home.config_file.read_text() == before
    # Exposing mathkit bare too clashes nowhere: its tools have other names.
    proc = run_mcphost("config", "set", "plugins.mathkit.expose", "bare", home=home)
    assert proc.returncode == 0, proc.stderr
    proc = run_mcphost("tools", "--json", home=home)
    assert proc.returncode == 0, proc.stderr
    assert '"is_prime"' in proc.stdout and '"upper"' in proc.stdout
