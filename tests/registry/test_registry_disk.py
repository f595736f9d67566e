"""The registry's disk failing under it: a full disk during an install and a database
with a damaged page give one line saying what happened and what to do, never a
traceback, and leave the registry as it was."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from bwrap_check import bwrap_required, require_root
from registry_helpers import cli_json, textkit_variant, trust_key
from support.cli import run_mcphost
from support.wheels import build_wheel

from mcphost.host import Home
from mcphost.security import Permissions, PrivateKey, sign_wheel


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    return line


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MiB tmpfs, mounted for this test only (needs root)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    require_root("mounting a small tmpfs to fill")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True
    )
    if proc.returncode != 0:
        why = f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}"
        if bwrap_required():
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.fixture(scope="session")
def big_wheel(tmp_path_factory: pytest.TempPathFactory, signing_key: PrivateKey) -> Path:
    """textkit 1.1.0 carrying 3 MB that does not compress, signed."""
    tmp = tmp_path_factory.mktemp("big")
    blob = secrets.token_hex(3 * 1024 * 1024 // 2)
    project = textkit_variant(tmp / "src", "1.1.0", extra_code=f'\n_BLOB = "{blob}"\n')
    raw = build_wheel(project, tmp / "raw")
    return sign_wheel(raw, signing_key, permissions=Permissions(), sequence=11, out=tmp / "s")


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` until ``leave`` bytes are free; returns the filler file."""
    st = os.statvfs(disk)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def test_a_full_disk_during_install_is_one_line_audited_and_changes_nothing(
    small_disk: Path, wheels: dict[str, Path], big_wheel: Path, signing_key: PrivateKey
) -> None:
    home = Home(small_disk / "home").ensure()
    trust_key(home, signing_key)
    proc = run_mcphost("plugin", "install", str(wheels["1.0"]), "--yes", home=home)
    assert proc.returncode == 0, proc.stderr
    listed = cli_json(home, "plugin", "list")
    stored = sorted(home.store_dir.iterdir())
    filler = fill(small_disk, leave=1024 * 1024)

    line = one_error_line(run_mcphost("plugin", "install", str(big_wheel), "--yes", home=home))
    assert line.startswith("error [registry_error]: the disk holding the mcphost home"), line
    assert "is full" in line and "Free some space" in line

    assert cli_json(home, "plugin", "list") == listed
    assert sorted(home.store_dir.iterdir()) == stored
    assert not list((home.versions_dir / "textkit").glob("1.1.0-*"))
    entries = json.loads(run_mcphost("audit", "--json", home=home).stdout)
    failed = [e for e in entries if e["action"] == "plugin.install" and e["outcome"] == "error"]
    assert [(e["plugin"], e["version"]) for e in failed] == [("textkit", "1.1.0")]
    assert "is full" in failed[0]["detail"]

    # With space again, the same install goes through.
    filler.unlink()
    proc = run_mcphost("plugin", "install", str(big_wheel), "--yes", home=home)
    assert proc.returncode == 0, proc.stderr
    assert cli_json(home, "plugin", "list")[0]["active"] == "1.1.0"


def test_a_disk_with_no_space_at_all_makes_registry_commands_say_so_and_change_nothing(
    small_disk: Path, wheels: dict[str, Path], signing_key: PrivateKey
) -> None:
    home = Home(small_disk / "home").ensure()
    trust_key(home, signing_key)
    proc = run_mcphost("plugin", "install", str(wheels["1.0"]), "--yes", home=home)
    assert proc.returncode == 0, proc.stderr
    listed = cli_json(home, "plugin", "list")
    filler = fill(small_disk, leave=0)
    for args in (["plugin", "remove", "textkit", "--force"], ["plugin", "list"]):
        line = one_error_line(run_mcphost(*args, home=home))
        assert line.startswith("error [registry_error]: the disk holding the mcphost home"), line
    filler.unlink()
    assert cli_json(home, "plugin", "list") == listed


def test_a_damaged_database_page_is_one_line_pointing_at_rebuild(
    home: Home, wheels: dict[str, Path]
) -> None:
    proc = run_mcphost("plugin", "install", str(wheels["1.0"]), "--yes", home=home)
    assert proc.returncode == 0, proc.stderr
    listed = cli_json(home, "plugin", "list")
    conn = sqlite3.connect(home.registry_db)
    roots = [r for (r,) in conn.execute("SELECT rootpage FROM sqlite_master WHERE rootpage > 1")]
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with open(home.registry_db, "r+b") as f:
        for root in roots:
            f.seek((root - 1) * page_size)
            f.write(b"\xa5" * page_size)

    for args in (["plugin", "list"], ["plugin", "info", "textkit"], ["tools"]):
        line = one_error_line(run_mcphost(*args, home=home))
        assert line.startswith("error [registry_damaged]: the registry database"), line
        assert "malformed" in line and "mcphost registry rebuild" in line

    proc = run_mcphost("registry", "rebuild", home=home)
    assert proc.returncode == 0, proc.stderr
    assert cli_json(home, "plugin", "list") == listed
    assert list(home.root.glob("registry.sqlite3.damaged-*"))
