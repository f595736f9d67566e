"""A home on a read-only file system: the commands that only read work from it (plugin
list and info, tools, call, serve); a change says the home is read-only, never that the
registry is damaged."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from bwrap_check import bwrap_required, require_root
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters
from registry_helpers import trust_key
from support.cli import MCPHOST, run_mcphost

from mcphost.host import Home
from mcphost.security import PrivateKey


def read_only_argv(home: Home, *args: str) -> list[str]:
    """``mcphost --home HOME ARGS...`` in a mount namespace where HOME is read-only."""
    root = str(home.root)
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, root, str(MCPHOST), "--home", root, *args]


def run_read_only(home: Home, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(read_only_argv(home, *args), capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def installed(
    tmp_path_factory: pytest.TempPathFactory, wheels: dict[str, Path], signing_key: PrivateKey
) -> Home:
    require_root("a read-only bind mount")
    if shutil.which("unshare") is None:
        pytest.fail("a read-only bind mount needs unshare (util-linux)")
    home = Home(tmp_path_factory.mktemp("ro") / "home").ensure()
    trust_key(home, signing_key)
    proc = run_mcphost("plugin", "install", str(wheels["1.0"]), "--yes", home=home)
    assert proc.returncode == 0, proc.stderr
    probe = run_read_only(home, "--version")
    if probe.returncode != 0:
        why = f"cannot make a read-only bind mount here: {probe.stderr.strip()}"
        if bwrap_required():
            pytest.fail(why)
        pytest.skip(why)
    return home


def test_plugin_list_and_info_read_a_read_only_home(installed: Home) -> None:
    listed = json.loads(run_mcphost("plugin", "list", "--json", home=installed).stdout)
    proc = run_read_only(installed, "plugin", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == listed
    proc = run_read_only(installed, "plugin", "info", "textkit", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["active"] == "1.0.0"


def test_tools_and_call_work_from_a_read_only_home(installed: Home) -> None:
    proc = run_read_only(installed, "tools", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "textkit.upper" in {t["name"] for t in json.loads(proc.stdout)}
    proc = run_read_only(installed, "call", "textkit.upper", '{"text": "hi"}')
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == "HI"


async def test_serve_answers_from_a_read_only_home(installed: Home) -> None:
    argv = read_only_argv(installed, "serve")

    params = StdioServerParameters(command=argv[0], args=argv[1:])
    async with Client(params) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "textkit.upper" in names
        res = await client.call_tool("textkit.upper", {"text": "ro"})
        assert res.structured_content == {"result": "RO"}


def test_a_change_in_a_read_only_home_says_it_is_read_only(
    installed: Home, wheels: dict[str, Path]
) -> None:
    for args in (
        ["plugin", "install", str(wheels["1.1"]), "--yes"],
        ["plugin", "remove", "textkit", "--force"],
    ):
        proc = run_read_only(installed, *args)
        assert proc.returncode == 1, proc.stdout
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("error [registry_error]: the mcphost home"), line
        assert "is read-only here" in line and "damaged" not in line
    listed = json.loads(run_mcphost("plugin", "list", "--json", home=installed).stdout)
    assert listed[0]["versions"] == ["1.0.0"]
