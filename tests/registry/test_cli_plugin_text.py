"""What a plugin's publisher wrote reaches the operator's terminal without control
characters: the permissions shown for approval at install, and ``plugin info``."""

from __future__ import annotations

from pathlib import Path

from registry_helpers import CliFn

from mcphost.host import Home
from mcphost.security import Permissions, PrivateKey, sign_wheel

#: A read path that retitles and clears the terminal and hides itself behind a CR.
TRICKY = "/srv/\x1b]0;pwned\x07\x1b[2J\x1b[8mhidden\rdata\u202e"
CONTROLS = "\x1b\x07\r\u202e"


def test_install_and_info_print_a_plugins_permissions_without_control_characters(
    cli: CliFn, home: Home, wheels: dict[str, Path], signing_key: PrivateKey, tmp_path: Path
) -> None:
    wheel = sign_wheel(
        wheels["1.0-unsigned"],
        signing_key,
        permissions=Permissions(read_paths=[TRICKY]),
        sequence=10,
        out=tmp_path / wheels["1.0"].name,
    )
    home.config_file.write_text('isolation = "rlimits"\n')
    asked = cli("plugin", "install", str(wheel))  # off a terminal: shows, then needs --yes
    assert asked.exit_code == 2
    (line,) = [ln for ln in asked.stderr.splitlines() if "read files:" in ln]
    assert "/srv/]0;pwned[2J[8mhidden data" in line
    assert not any(c in asked.stderr for c in CONTROLS)

    assert cli("plugin", "install", str(wheel), "--yes").exit_code == 0
    info = cli("plugin", "info", "textkit")
    assert info.exit_code == 0, info.output
    assert "read files: /srv/]0;pwned[2J[8mhidden data" in info.stdout
    assert not any(c in info.stdout for c in CONTROLS)
