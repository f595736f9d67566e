"""What docs/operators.md shows an operator is what mcphost does."""

from __future__ import annotations

import re
from pathlib import Path

from support.cli import run_mcphost

from mcphost.host import Home

REPO = Path(__file__).resolve().parents[2]
OPERATORS = (REPO / "docs" / "operators.md").read_text(encoding="utf-8")


def words(text: str) -> str:
    return " ".join(text.split())


def test_the_sample_configuration_error_is_the_one_mcphost_prints(tmp_path: Path) -> None:
    found = re.search(
        r"This\s+`(?P<path>[^`]+)`\s+```toml\n(?P<toml>.*?)```\s+is refused with\s+"
        r"```\n(?P<error>.*?)```",
        OPERATORS,
        re.S,
    )
    assert found, "operators.md shows no sample configuration and its error"
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(found["toml"], encoding="utf-8")
    proc = run_mcphost("config", "show", home=home)
    assert proc.returncode == 2, proc.stderr
    printed = proc.stderr.replace(str(home / "config.toml"), found["path"])
    assert words(printed) == words(found["error"])


def test_the_guide_says_the_mode_a_new_home_gets(tmp_path: Path) -> None:
    home = Home(tmp_path / "new" / "home").ensure()
    mode = home.root.stat().st_mode & 0o777
    assert f"mcphost creates a new home with mode {mode:04o}" in words(OPERATORS)
    assert "default umask" not in OPERATORS
