"""What docs/operators.md shows an operator is what mcphost does."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from mcphost.host import Home

REPO = Path(__file__).resolve().parents[2]
OPERATORS = (REPO / "docs" / "operators.md").read_text(encoding="utf-8")
SCRIPT = Path(sys.executable).with_name("mcphost")
COMMAND = (
    [str(SCRIPT)]
    if SCRIPT.exists()
    else [sys.executable, "-c", "from mcphost.host.cli import main; main()"]
)


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
    proc = subprocess.run(
        [*COMMAND, "--home", str(home), "config", "show"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    printed = proc.stderr.replace(str(home / "config.toml"), found["path"])
    assert words(printed) == words(found["error"])


def test_the_guide_says_the_mode_a_new_home_gets(tmp_path: Path) -> None:
    home = Home(tmp_path / "new" / "home").ensure()
    mode = home.root.stat().st_mode & 0o777
    assert f"mcphost creates a new home with mode {mode:04o}" in words(OPERATORS)
    assert "default umask" not in OPERATORS
