"""What ``plugin install`` and ``plugin rollback`` tell a person and a script: the
approval error, the unsigned warning, the install's result, the rollback's advice."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from registry_helpers import CliFn, write_config

from mcphost.host import Home


def test_install_off_a_terminal_without_yes_is_an_error_without_a_usage_banner(
    cli: CliFn, wheels: dict[str, Path]
) -> None:
    asked = cli("plugin", "install", str(wheels["1.0"]))
    assert asked.exit_code == 2
    assert "Usage:" not in asked.output and "--help" not in asked.output
    assert asked.stderr.splitlines()[-1] == (
        "error [approval_required]: installing needs approval of the permissions above; "
        "run on a terminal to be asked, or pass --yes to approve them"
    )


def test_an_unsigned_install_warns_once_that_the_wheel_is_unsigned(
    cli: CliFn, home: Home, wheels: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    write_config(home, "allow_unsigned = true\n")
    with caplog.at_level(logging.WARNING):
        done = cli("plugin", "install", "--yes", str(wheels["1.0-unsigned"]))
    assert done.exit_code == 0, done.output
    logged = [r.getMessage() for r in caplog.records if "not signed" in r.getMessage()]
    assert done.stderr.count("not signed") + len(logged) == 1, (done.stderr, logged)


def test_install_says_whether_it_installed_reactivated_or_changed_nothing(
    cli: CliFn, wheels: dict[str, Path]
) -> None:
    def install(name: str, *options: str) -> dict[str, object]:
        done = cli("plugin", "install", "--yes", "--json", *options, str(wheels[name]))
        assert done.exit_code == 0, done.output
        out: dict[str, object] = json.loads(done.stdout)
        return out

    assert install("1.0")["result"] == "installed"
    assert install("1.1")["result"] == "installed"
    again = install("1.0")
    assert again["result"] == "reactivated"
    assert again["active"] is True and again["previous"] == "1.1.0"
    assert install("1.0")["result"] == "already_active"
    assert install("1.1", "--no-activate")["result"] == "already_installed"
    text = cli("plugin", "install", "--yes", str(wheels["1.1"]))
    assert text.stdout.startswith("re-activated textkit 1.1.0, installed already (signed by ")
    assert "active: textkit 1.1.0 (was 1.0.0)" in text.stdout


def test_rollback_with_no_other_version_installed_does_not_suggest_to_version(
    cli: CliFn, wheels: dict[str, Path]
) -> None:
    assert cli("plugin", "install", "--yes", str(wheels["1.0"])).exit_code == 0
    refused = cli("plugin", "rollback", "textkit")
    assert refused.exit_code == 1
    assert refused.stderr == (
        "error [registry_error]: textkit has no other version installed to roll back to "
        "(installed: 1.0.0); install one with `mcphost plugin install WHEEL`\n"
    )
