"""Crash safety: the CLI is killed (SIGKILL) at named points of an install, a swap and a
removal; the registry is then usable and in the old state or the new one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
from registry_helpers import run_cli, trust_key

from mcphost.host import Home, HostConfig
from mcphost.host.registry_link import source_for
from mcphost.host.verification import verify_source
from mcphost.registry import CRASH_POINTS, Registry
from mcphost.registry.store import BUILDING, TRASH
from mcphost.security import PrivateKey


@pytest.fixture(scope="session")
def prepared(
    tmp_path_factory: pytest.TempPathFactory, wheels: dict[str, Path], signing_key: PrivateKey
) -> Home:
    """A home with textkit 1.0 active and 1.1 installed beside it, both through the CLI.
    The registry stores relative paths, so copies of this home work anywhere."""
    home = Home(tmp_path_factory.mktemp("crash-template") / "home").ensure()
    trust_key(home, signing_key)
    for args in (
        ["plugin", "install", str(wheels["1.0"]), "--yes"],
        ["plugin", "install", str(wheels["1.1"]), "--yes", "--no-activate"],
    ):
        proc = run_cli(home, *args)
        assert proc.returncode == 0, proc.stderr
    return home


def copy_home(template: Home, tmp_path: Path) -> Home:
    dest = tmp_path / "home"
    shutil.copytree(template.root, dest, symlinks=True)
    return Home(dest)


def state(home: Home) -> dict[str, object]:
    """The registry as a user sees it (through the CLI), after checking it is whole."""
    with Registry.open(home) as reg:  # opening sweeps what a crash left behind
        rows = [v for p in reg.plugins() for v in reg.versions(p.name)]
        cfg = HostConfig()
        for rec in rows:
            verify_source(home, cfg, source_for(rec))  # every file as signed
        dirs = (
            {str(p) for p in (home.versions_dir / "textkit").iterdir()}
            if (home.versions_dir / "textkit").exists()
            else set()
        )
        assert dirs == {rec.root for rec in rows}, "a version directory without a record"
        assert not any((home.versions_dir / BUILDING).glob("*"))
        assert not any((home.versions_dir / TRASH).glob("*"))
        assert {p.stem for p in home.store_dir.glob("*.whl")} == {r.wheel_sha256 for r in rows}
        for p in reg.plugins():
            assert p.active_version is None or p.active_version in p.versions
    proc = run_cli(home, "plugin", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    return {p["name"]: (p["active"], tuple(p["versions"])) for p in listed}


CRASH_LAUNCHER = Path(__file__).with_name("crash_launcher.py")

INSTALL_POINTS = [
    "install_stored",
    "build_unpacked",
    "build_synced",
    "install_renamed",
    "install_before_commit",
    "install_committed",
]
SWAP_POINTS = ["swap_before_commit", "swap_committed"]
REMOVE_POINTS = ["remove_before_commit", "remove_committed", "remove_trashed"]
REPAIR_POINTS = ["build_synced", "repair_swapped"]
REBUILD_POINTS = ["rebuild_written", "rebuild_set_aside"]


def test_every_crash_point_is_exercised() -> None:
    points = set(INSTALL_POINTS + SWAP_POINTS + REMOVE_POINTS + REPAIR_POINTS + REBUILD_POINTS)
    assert sorted(points) == sorted(CRASH_POINTS)


def killed(home: Home, point: str, *args: str) -> None:
    proc = run_cli(home, *args, launcher=[sys.executable, str(CRASH_LAUNCHER), point])
    assert proc.returncode == -signal.SIGKILL, (
        f"expected a kill at {point}: rc={proc.returncode} {proc.stderr}"
    )


@pytest.mark.parametrize("point", INSTALL_POINTS)
def test_an_install_killed_at_any_point_leaves_the_old_or_the_new_state(
    point: str, prepared: Home, wheels: dict[str, Path], tmp_path: Path
) -> None:
    home = copy_home(prepared, tmp_path)
    assert run_cli(home, "plugin", "remove", "textkit", "1.1").returncode == 0
    old = {"textkit": ("1.0.0", ("1.0.0",))}
    new = {"textkit": ("1.0.0", ("1.0.0", "1.1.0"))}
    assert state(home) == old
    killed(home, point, "plugin", "install", str(wheels["1.1"]), "--yes")
    leftovers = list((home.versions_dir / BUILDING).glob("*")) + [
        p for p in (home.versions_dir / "textkit").iterdir() if p.name.startswith("1.1.0")
    ]
    if point in ("build_unpacked", "build_synced", "install_renamed"):
        assert leftovers, "the kill should have left a half-made version behind"
    assert state(home) in (old, new)
    # And it goes on working: the same install now completes.
    proc = run_cli(home, "plugin", "install", str(wheels["1.1"]), "--yes")
    assert proc.returncode == 0, proc.stderr
    assert state(home) == {"textkit": ("1.1.0", ("1.0.0", "1.1.0"))}


@pytest.mark.parametrize("point", SWAP_POINTS)
def test_a_swap_killed_at_any_point_leaves_the_old_or_the_new_active_version(
    point: str, prepared: Home, tmp_path: Path
) -> None:
    home = copy_home(prepared, tmp_path)
    killed(home, point, "plugin", "swap", "textkit", "1.1")
    after = state(home)
    assert after in (
        {"textkit": ("1.0.0", ("1.0.0", "1.1.0"))},
        {"textkit": ("1.1.0", ("1.0.0", "1.1.0"))},
    )
    target = "1.0" if after["textkit"][0] == "1.1.0" else "1.1"  # type: ignore[index]
    assert run_cli(home, "plugin", "swap", "textkit", target).returncode == 0


@pytest.mark.parametrize("point", REMOVE_POINTS)
def test_a_removal_killed_at_any_point_leaves_the_version_whole_or_gone(
    point: str, prepared: Home, tmp_path: Path
) -> None:
    home = copy_home(prepared, tmp_path)
    killed(home, point, "plugin", "remove", "textkit", "1.1")
    assert state(home) in (
        {"textkit": ("1.0.0", ("1.0.0", "1.1.0"))},
        {"textkit": ("1.0.0", ("1.0.0",))},
    )
    proc = run_cli(home, "plugin", "remove", "textkit", "--force")
    assert proc.returncode == 0, proc.stderr
    assert state(home) == {}


@pytest.mark.parametrize("point", REPAIR_POINTS)
def test_a_repair_killed_at_any_point_leaves_the_version_with_whole_files(
    point: str, prepared: Home, wheels: dict[str, Path], tmp_path: Path
) -> None:
    home = copy_home(prepared, tmp_path)
    with Registry.open(home) as reg:
        code = Path(reg.version("textkit", "1.0").plugin_dir, "mcphost_textkit", "__init__.py")
    os.chmod(code, 0o644)
    original = code.read_bytes()
    code.write_bytes(original + b"\n# changed after install\n")
    killed(home, point, "plugin", "install", str(wheels["1.0"]), "--yes")
    # Either the changed tree (the kill came before the swap) or the restored one; never
    # a version without files.
    assert code.read_bytes() in (original, original + b"\n# changed after install\n")
    proc = run_cli(home, "plugin", "install", str(wheels["1.0"]), "--yes")
    assert proc.returncode == 0, proc.stderr
    assert code.read_bytes() == original
    assert state(home) == {"textkit": ("1.0.0", ("1.0.0", "1.1.0"))}


def test_the_old_crash_variable_does_not_kill_an_installed_mcphost(
    prepared: Home, wheels: dict[str, Path], tmp_path: Path
) -> None:
    home = copy_home(prepared, tmp_path)
    assert run_cli(home, "plugin", "remove", "textkit", "1.1").returncode == 0
    proc = run_cli(
        home,
        "plugin",
        "install",
        str(wheels["1.1"]),
        "--yes",
        env={"MCPHOST_TEST_CRASH_AT": "install_stored"},
    )
    assert proc.returncode == 0, proc.stderr
    assert state(home) == {"textkit": ("1.1.0", ("1.0.0", "1.1.0"))}


@pytest.mark.parametrize("point", REBUILD_POINTS)
def test_a_rebuild_killed_at_any_point_deletes_nothing_and_can_run_again(
    point: str, prepared: Home, tmp_path: Path
) -> None:
    home = copy_home(prepared, tmp_path)
    files = {
        p.relative_to(home.root) for p in [*home.versions_dir.rglob("*"), *home.store_dir.iterdir()]
    }
    home.registry_db.write_bytes(b"")
    killed(home, point, "registry", "rebuild")
    proc = run_cli(home, "plugin", "list")
    assert proc.returncode == 1 and "registry rebuild" in proc.stderr, proc.stderr
    after = {
        p.relative_to(home.root) for p in [*home.versions_dir.rglob("*"), *home.store_dir.iterdir()]
    }
    assert after == files
    proc = run_cli(home, "registry", "rebuild")
    assert proc.returncode == 0, proc.stderr
    assert state(home) == {"textkit": ("1.0.0", ("1.0.0", "1.1.0"))}
