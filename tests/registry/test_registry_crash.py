"""Crash safety: the CLI is killed (SIGKILL) at named points of an install, a swap, a
removal, a repair and a rebuild; the registry is then usable and in the one state that
point must leave: the old one before the change's commit, the new one after it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
from registry_helpers import trust_key
from support.cli import run_mcphost

from mcphost.host import Home, HostConfig
from mcphost.host.registry_link import source_for
from mcphost.host.verification import verify_source
from mcphost.registry import CRASH_POINTS, RecoveryReport, Registry
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
        proc = run_mcphost(*args, home=home)
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
    return listed(home)


def listed(home: Home) -> dict[str, object]:
    """The registry as ``mcphost plugin list`` shows it: name -> (active, versions)."""
    proc = run_mcphost("plugin", "list", "--json", home=home)
    assert proc.returncode == 0, proc.stderr
    return {p["name"]: (p["active"], tuple(p["versions"])) for p in json.loads(proc.stdout)}


CRASH_LAUNCHER = Path(__file__).with_name("crash_launcher.py")

INSTALL_POINTS = [
    "install_stored",
    "build_unpacked",
    "build_synced",
    "install_renamed",
    "install_before_commit",
    "install_committed",
]
#: The one state each point must leave: before the change's commit the old one, after
#: it the new one.
#: Install point -> whether it comes after the commit (then 1.1 is installed).
INSTALL_COMMITTED = {p: p == "install_committed" for p in INSTALL_POINTS}
#: Swap point -> the active version it leaves.
SWAP_ACTIVE = {"swap_before_commit": "1.0.0", "swap_committed": "1.1.0"}
#: Removal point -> whether the version is gone.
REMOVE_DONE = {"remove_before_commit": False, "remove_committed": True, "remove_trashed": True}
#: Repair point -> whether the files are the restored ones.
REPAIR_RESTORED = {"build_synced": False, "repair_swapped": True}
REBUILD_POINTS = ["rebuild_written", "rebuild_set_aside"]


def test_every_crash_point_is_exercised() -> None:
    points = {*INSTALL_POINTS, *SWAP_ACTIVE, *REMOVE_DONE, *REPAIR_RESTORED, *REBUILD_POINTS}
    assert sorted(points) == sorted(CRASH_POINTS)


def killed(home: Home, point: str, *args: str) -> None:
    proc = run_mcphost(*args, command=[sys.executable, str(CRASH_LAUNCHER), point], home=home)
    assert proc.returncode == -signal.SIGKILL, (
        f"expected a kill at {point}: rc={proc.returncode} {proc.stderr}"
    )


def swept(home: Home) -> RecoveryReport:
    """What the first open after the kill swept away (leftovers of the killed change)."""
    with Registry.open(home) as reg:
        return reg.last_recovery


@pytest.mark.parametrize("point", INSTALL_POINTS)
def test_an_install_killed_before_its_commit_leaves_the_old_state_and_after_it_the_new(
    point: str, prepared: Home, wheels: dict[str, Path], tmp_path: Path
) -> None:
    home = copy_home(prepared, tmp_path)
    assert run_mcphost("plugin", "remove", "textkit", "1.1", home=home).returncode == 0
    old = {"textkit": ("1.0.0", ("1.0.0",))}
    new = {"textkit": ("1.0.0", ("1.0.0", "1.1.0"))}
    assert state(home) == old
    killed(home, point, "plugin", "install", str(wheels["1.1"]), "--yes")
    leftovers = list((home.versions_dir / BUILDING).glob("*")) + [
        p for p in (home.versions_dir / "textkit").iterdir() if p.name.startswith("1.1.0")
    ]
    if point in ("build_unpacked", "build_synced", "install_renamed", "install_before_commit"):
        assert leftovers, "the kill should have left a half-made version behind"
    report = swept(home)
    if INSTALL_COMMITTED[point]:
        # Committed: the version is recorded and nothing of it is a leftover.
        assert report == RecoveryReport(), report
        assert state(home) == new
    else:
        # Not committed: the recovery deletes the stored wheel and any half-made version.
        assert [Path(w).stem for w in report.removed_wheels] == [_sha256(wheels["1.1"])]
        assert len(report.removed_dirs) == (1 if leftovers else 0), report
        assert state(home) == old
    # And it goes on working: the same install now completes.
    proc = run_mcphost("plugin", "install", str(wheels["1.1"]), "--yes", home=home)
    assert proc.returncode == 0, proc.stderr
    assert state(home) == {"textkit": ("1.1.0", ("1.0.0", "1.1.0"))}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("point", "active"), SWAP_ACTIVE.items())
def test_a_swap_killed_before_its_commit_keeps_the_old_active_version_and_after_it_the_new(
    point: str, active: str, prepared: Home, tmp_path: Path
) -> None:
    home = copy_home(prepared, tmp_path)
    killed(home, point, "plugin", "swap", "textkit", "1.1")
    assert swept(home) == RecoveryReport()
    assert state(home) == {"textkit": (active, ("1.0.0", "1.1.0"))}
    target = "1.0" if active == "1.1.0" else "1.1"
    assert run_mcphost("plugin", "swap", "textkit", target, home=home).returncode == 0
    assert state(home) == {"textkit": (f"{target}.0", ("1.0.0", "1.1.0"))}


@pytest.mark.parametrize(("point", "removed"), REMOVE_DONE.items())
def test_a_removal_killed_before_its_commit_keeps_the_version_and_after_it_finishes_it(
    point: str, removed: bool, prepared: Home, tmp_path: Path
) -> None:
    home = copy_home(prepared, tmp_path)
    with Registry.open(home) as reg:
        doomed = reg.version("textkit", "1.1")
    killed(home, point, "plugin", "remove", "textkit", "1.1")
    report = swept(home)
    if removed:
        # Committed: the recovery deletes the files the removal had not deleted yet.
        assert [Path(w).stem for w in report.removed_wheels] == [doomed.wheel_sha256]
        assert report.removed_dirs, report
        assert not Path(doomed.root).exists()
        assert state(home) == {"textkit": ("1.0.0", ("1.0.0",))}
    else:
        assert report == RecoveryReport(), report
        assert Path(doomed.plugin_dir).is_dir()
        assert state(home) == {"textkit": ("1.0.0", ("1.0.0", "1.1.0"))}
    proc = run_mcphost("plugin", "remove", "textkit", "--force", home=home)
    assert proc.returncode == 0, proc.stderr
    assert state(home) == {}


@pytest.mark.parametrize(("point", "restored"), REPAIR_RESTORED.items())
def test_a_repair_killed_before_its_swap_keeps_the_changed_files_and_after_it_the_restored(
    point: str, restored: bool, prepared: Home, wheels: dict[str, Path], tmp_path: Path
) -> None:
    home = copy_home(prepared, tmp_path)
    with Registry.open(home) as reg:
        code = Path(reg.version("textkit", "1.0").plugin_dir, "mcphost_textkit", "__init__.py")
    os.chmod(code, 0o644)
    original = code.read_bytes()
    changed = original + b"\n# changed after install\n"
    code.write_bytes(changed)
    killed(home, point, "plugin", "install", str(wheels["1.0"]), "--yes")
    # Never a version without files: the changed tree until the one atomic exchange,
    # the restored one from then on.
    assert code.read_bytes() == (original if restored else changed)
    assert len(swept(home).removed_dirs) == 1  # the other tree, left in .building
    assert code.read_bytes() == (original if restored else changed)
    whole = {"textkit": ("1.0.0", ("1.0.0", "1.1.0"))}
    # Restored: every file verifies again; not yet: the records are unchanged.
    assert (state(home) if restored else listed(home)) == whole
    proc = run_mcphost("plugin", "install", str(wheels["1.0"]), "--yes", home=home)
    assert proc.returncode == 0, proc.stderr
    assert code.read_bytes() == original
    assert state(home) == {"textkit": ("1.0.0", ("1.0.0", "1.1.0"))}


def test_the_old_crash_variable_does_not_kill_an_installed_mcphost(
    prepared: Home, wheels: dict[str, Path], tmp_path: Path
) -> None:
    home = copy_home(prepared, tmp_path)
    assert run_mcphost("plugin", "remove", "textkit", "1.1", home=home).returncode == 0
    proc = run_mcphost(
        "plugin",
        "install",
        str(wheels["1.1"]),
        "--yes",
        extra_env={"MCPHOST_TEST_CRASH_AT": "install_stored"},
        home=home,
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
    fresh = home.registry_db.with_name(home.registry_db.name + ".rebuild")
    kept = list(home.registry_db.parent.glob(home.registry_db.name + ".damaged-*"))
    # The rebuilt database is written aside; it takes the old one's place only in the
    # last step, so until then the registry is the damaged one, refused.
    assert fresh.stat().st_size > 0
    if point == "rebuild_written":
        assert home.registry_db.stat().st_size == 0 and kept == []
    else:  # rebuild_set_aside: the damaged database is kept aside, none in its place
        assert not home.registry_db.exists() and len(kept) == 1
    proc = run_mcphost("plugin", "list", home=home)
    assert proc.returncode == 1 and "registry rebuild" in proc.stderr, proc.stderr
    after = {
        p.relative_to(home.root) for p in [*home.versions_dir.rglob("*"), *home.store_dir.iterdir()]
    }
    assert after == files
    proc = run_mcphost("registry", "rebuild", home=home)
    assert proc.returncode == 0, proc.stderr
    assert state(home) == {"textkit": ("1.0.0", ("1.0.0", "1.1.0"))}
