"""The mcphost wheel: only ``mcphost/...`` inside, and it works when installed into a venv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("host", "sdk", "sandbox", "registry", "security")

pytestmark = pytest.mark.slow


def run(*cmd: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mcphost wheel, built with pip from a copy of the checkout's sources."""
    src = tmp_path_factory.mktemp("mcphost-src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, src / pkg, ignore=ignore)
    out = tmp_path_factory.mktemp("mcphost-wheel")
    run(
        sys.executable,
        "-m",
        "pip",
        "--disable-pip-version-check",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        out,
        src,
    )
    (built,) = out.glob("mcphost-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed by pip.

    The dependencies (msgspec, pydantic, ...) are not downloaded again: a .pth line adds
    this environment's site-packages *after* the venv's own, where mcphost itself is not
    (the development install lives elsewhere), so mcphost comes from the wheel only.
    """
    root = tmp_path_factory.mktemp("venv") / "v"
    run(sys.executable, "-m", "venv", "--without-pip", root)
    python = root / "bin" / "python"
    run(
        sys.executable,
        "-m",
        "pip",
        "--disable-pip-version-check",
        "--python",
        python,
        "install",
        "-q",
        "--no-deps",
        wheel,
    )
    deps = Path(sysconfig.get_paths()["purelib"])
    assert not (deps / "mcphost").exists(), "the dependency path must not hold mcphost"
    site = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        ).stdout.strip()
    )
    (site / "zz_test_dependencies.pth").write_text(f"{deps}\n")
    return root


def test_the_wheel_holds_only_the_mcphost_namespace_and_its_metadata(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"mcphost", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    # mcphost is a namespace package: no mcphost/__init__.py claims it.
    assert "mcphost/__init__.py" not in names
    for pkg in PACKAGES:
        assert f"mcphost/{pkg}/__init__.py" in names


def test_the_wheel_holds_every_module_of_the_source_tree(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [
        f"mcphost/{p.relative_to(REPO).as_posix()}"
        for pkg in PACKAGES
        for p in (REPO / pkg).rglob("*.py")
        if "__pycache__" not in p.parts and f"mcphost/{p.relative_to(REPO).as_posix()}" not in names
    ]
    assert not missing, f"modules left out of the wheel (add their package to pyproject): {missing}"


def test_the_wheel_declares_the_console_script_and_its_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        dist_info = next(
            n.split("/")[0] for n in zf.namelist() if n.endswith(".dist-info/METADATA")
        )
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
        metadata = zf.read(f"{dist_info}/METADATA").decode()
    assert "mcphost = mcphost.host.cli:main" in entry_points
    for dep in ("msgspec", "pluggy", "psutil", "click", "pydantic"):
        assert f"Requires-Dist: {dep}" in metadata


WHERE = '''
import mcphost.sandbox
import mcphost.sdk
from mcphost.sdk import Plugin

plugin = Plugin("where")


@plugin.tool
def modules() -> dict[str, str]:
    """Where the worker imported mcphost from."""
    return {"sdk": mcphost.sdk.__file__, "sandbox": mcphost.sandbox.__file__}
'''


def test_the_installed_wheel_runs_the_cli_and_a_real_call_through_a_worker(
    venv: Path, tmp_path: Path, plugin_dirs: dict[str, Path]
) -> None:
    python, script = venv / "bin" / "python", venv / "bin" / "mcphost"
    assert script.exists()
    where = run(python, "-c", "import mcphost.host, mcphost.sdk; print(mcphost.sdk.__file__)")
    assert where.stdout.strip().startswith(str(venv))
    assert "0.1.0" in run(script, "--version").stdout

    # A plugin that reports where its worker found mcphost, installed by hand.
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "where_plugin.py").write_text(textwrap.dedent(WHERE))
    dist = plugins / "where_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: where-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[mcphost.plugins]\nwhere = where_plugin:plugin\n")

    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('allow_unsigned = true\nisolation = "rlimits"\n')
    env = {
        **os.environ,
        "MCPHOST_HOME": str(home),
        "MCPHOST_PLUGIN_PATH": os.pathsep.join([str(plugins), str(plugin_dirs["textkit"])]),
    }
    upper = run(script, "call", "textkit.upper", '{"text": "from the wheel"}', env=env)
    assert json.loads(upper.stdout) == "FROM THE WHEEL"
    found = json.loads(run(script, "call", "where.modules", env=env).stdout)
    assert found["sdk"].startswith(str(venv)) and found["sandbox"].startswith(str(venv))
