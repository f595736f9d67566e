"""The mcphost wheel: only ``mcphost/...`` inside, and it works when installed into a venv."""

from __future__ import annotations

import email
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from importlib import metadata as importlib_metadata
from pathlib import Path

import pytest
from bwrap_check import require_bwrap
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from support.wheels import build_wheel

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
    for pkg in (*PACKAGES, "example_plugins"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=ignore)
    out = tmp_path_factory.mktemp("mcphost-wheel")
    built = build_wheel(src, out)
    assert built.name.startswith("mcphost-"), built
    return built


#: What a venv made by ``python -m venv`` brings to build the demo's wheels with.
VENV_TOOLS = ("pip", "setuptools", "wheel")


def dependency_closure(wheel: Path) -> set[str]:
    """The distributions of this environment that ``wheel``'s default dependencies (no
    extras) need, transitively: what ``pip install WHEEL`` would bring."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        todo = email.message_from_bytes(zf.read(meta)).get_all("Requires-Dist") or []
    seen: set[str] = set()
    while todo:
        req = Requirement(todo.pop())
        name = canonicalize_name(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        todo.extend(importlib_metadata.distribution(name).requires or [])
    return seen


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed by pip, as a user's normal install has it.

    The dependencies are not downloaded again: the distributions the wheel's metadata
    asks for (and theirs, and pip, setuptools and wheel) are linked in from this
    environment, and nothing else is, so a dependency missing from the metadata is
    missing here too.
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
    site = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        ).stdout.strip()
    )
    for name in sorted(dependency_closure(wheel) | set(VENV_TOOLS)):
        dist = importlib_metadata.distribution(name)
        tops = {f.parts[0] for f in dist.files or []} - {"__pycache__"}
        for top in sorted(t for t in tops if not t.startswith("..")):
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)
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


def test_the_seccomp_layer_is_a_default_dependency_not_an_extra(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [
            line
            for line in zf.read(meta).decode().splitlines()
            if line.startswith("Requires-Dist: pyseccomp")
        ]
    assert requires and all("extra ==" not in line for line in requires), requires


@pytest.mark.bwrap
def test_doctor_in_a_normal_install_reports_the_seccomp_layer_active(
    venv: Path, tmp_path: Path
) -> None:
    require_bwrap()
    env = {**os.environ, "MCPHOST_HOME": str(tmp_path / "home")}
    out = run(venv / "bin" / "mcphost", "doctor", env=env).stdout
    assert "  backend bwrap (namespaces): available" in out, out
    assert re.search(r"^    seccomp +EPERM for ptrace, mount, bpf", out, re.M), out
    assert "unavailable" not in out and "nested user namespaces: no seccomp" not in out, out


@pytest.mark.bwrap
def test_doctor_says_plainly_when_libseccomp_cannot_be_loaded(venv: Path, tmp_path: Path) -> None:
    require_bwrap()
    import pyseccomp  # noqa: F401  (loads libseccomp, so its file shows in our maps)

    maps = Path("/proc/self/maps").read_text().split()
    (lib,) = {word for word in maps if "/libseccomp.so" in word}
    # The same machine without libseccomp: its file and the loader's cache read as empty.
    hide = ["--ro-bind", "/dev/null", lib, "--ro-bind", "/dev/null", "/etc/ld.so.cache"]
    env = {**os.environ, "MCPHOST_HOME": str(tmp_path / "home")}
    proc = run("bwrap", "--dev-bind", "/", "/", *hide, venv / "bin" / "mcphost", "doctor", env=env)
    assert re.search(
        r"^    seccomp +seccomp: unavailable: the libseccomp library cannot be loaded \(.+\); "
        r"install it \(Debian/Ubuntu: apt install libseccomp2",
        proc.stdout,
        re.M,
    ), proc.stdout
    assert "nested user namespaces: no seccomp filter" in proc.stdout


def test_the_wheel_ships_the_example_plugins_sources(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("textkit", "mathkit", "notes"):
        ours = REPO / "example_plugins" / name
        for path in [ours / "pyproject.toml", *ours.glob("mcphost_*/*.py")]:
            shipped = f"mcphost/host/example_plugins/{path.relative_to(ours.parent).as_posix()}"
            assert shipped in names, f"{shipped} is not in the wheel"


def test_mcphost_demo_runs_from_a_pip_install_outside_any_checkout(
    venv: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "tmp").mkdir()
    env = {
        **os.environ,
        "MCPHOST_HOME": str(tmp_path / "home"),
        "TMPDIR": str(tmp_path / "tmp"),
        "PATH": os.pathsep.join([str(venv / "bin"), os.environ.get("PATH", "")]),
    }
    env.pop("MCPHOST_EXAMPLES", None)
    proc = subprocess.run(
        [venv / "bin" / "mcphost", "demo"],
        cwd=elsewhere,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=110,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout
    assert "built 5 wheels with pip" in proc.stdout
    assert "-> 'HELLO FROM A SANDBOX'" in proc.stdout
    assert "failed calls: 0; answers from the old version after a switch: 0" in proc.stdout
    assert "the breaking swap refused" in proc.stdout
    assert list(elsewhere.iterdir()) == []


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
