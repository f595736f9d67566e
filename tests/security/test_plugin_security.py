"""The attack suite: malicious plugins, installed as an operator would, each contained.

Every file in ``attack_plugins/`` is the code of one malicious plugin. Each becomes its
own distribution, built into a wheel by its build backend (setuptools, called as pip
calls it), signed with a test key and installed with ``mcphost plugin install WHEEL
--yes`` into one home whose trust store holds that key.
One ``mcphost serve`` on that home (the bubblewrap backend, required) serves them all,
beside the benign ``notes`` example plugin; the tests are its MCP client, over stdio.

The host process is given what an attacker wants: a canary file with a random secret in
the host user's home, a random secret in its environment, an inheritable fd on that
file, a TCP listener on its loopback, and another plugin's data. Each test calls one
attack and checks what a user would see: the secret in no result, error or log line,
the listener untouched, the host process alive and answering, a benign call to another
plugin working afterwards, and a crashed worker's error naming the plugin and why.
The file's tests share that one host; each attack is its own plugin, so one attack's
crashes and restarts never touch another's.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random
import re
import secrets
import select
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from bwrap_check import require_bwrap
from security_helpers import EXAMPLES, REPO
from support.cli import mcphost_command, run_mcphost
from support.subprocess_coverage import environment, without_coverage
from support.wheels import build_wheels

from mcphost.host import Home, Host, HostConfig
from mcphost.sandbox.bwrap import BubblewrapBackend, code_paths
from mcphost.sandbox.client import spawn_worker
from mcphost.sandbox.isolation import LaunchPlan, WorkerSpec
from mcphost.security import Permissions, PrivateKey, sign_wheel
from mcphost.security.permissions import PermissionLimits

pytestmark = pytest.mark.bwrap

ATTACK_PLUGINS = Path(__file__).resolve().parent / "attack_plugins"

#: What each attack plugin declares in its signed manifest: small limits keep it quick.
PERMISSIONS: dict[str, Permissions] = {
    "canary_file": Permissions(),
    "other_files": Permissions(),
    "write_outside": Permissions(),
    "tcp_loopback": Permissions(),
    # Network granted, but for another port than the one it tries.
    "tcp_ungranted_port": Permissions(network=["127.0.0.1:9"]),
    "host_env": Permissions(),
    "fork_bomb": Permissions(limits=PermissionLimits(processes=16)),
    "memory_bomb": Permissions(limits=PermissionLimits(memory_mb=128)),
    "cpu_spin": Permissions(limits=PermissionLimits(cpu_seconds=2)),
    "cpu_spin_forked": Permissions(limits=PermissionLimits(cpu_seconds=2, processes=16)),
    "fill_disk": Permissions(limits=PermissionLimits(tmp_mb=4, file_size_mb=8)),
    "signal_host": Permissions(),
    "ptrace_host": Permissions(),
    "proc_view": Permissions(),
    "inherited_fd": Permissions(),
    "oversized_frame": Permissions(),
    "garbage_frame": Permissions(),
    "output_flood": Permissions(),
    "unix_socket": Permissions(),
    "kernel_surface": Permissions(),
    "host_layout": Permissions(),
    # Not an attack: a worker whose forked children share its memory, within its limit.
    "shared_pages": Permissions(limits=PermissionLimits(memory_mb=128)),
}

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "mcphost-attack-{dash}"
version = "1.0.0"
description = "A malicious plugin for mcphost's attack suite"
requires-python = ">=3.11"
dependencies = []

[project.entry-points."mcphost.plugins"]
attack_{name} = "mcphost_attack_{name}:plugin"

[tool.setuptools]
packages = ["mcphost_attack_{name}"]
"""

#: The fd number the host holds the canary file open on, inheritable.
INHERITED_FD = 200
#: The host's unix sockets: an abstract name, and a file in the host user's home.
UNIX_ABSTRACT = f"mcphost-attack-suite-{os.getpid()}"
UNIX_PATH = "agent.sock"

CONFIG = """\
isolation = "bwrap"
require_namespaces = true
call_timeout = 30
ping_interval = 0.25
max_restarts = 50
"""


# -- building and installing ---------------------------------------------------------


def _write_distribution(name: str, root: Path) -> Path:
    """``mcphost-attack-<name>``: the attack plugin's code as a package, with a pyproject."""
    project = root / name
    package = project / f"mcphost_attack_{name}"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text((ATTACK_PLUGINS / f"{name}.py").read_text())
    pyproject = PYPROJECT.format(name=name, dash=name.replace("_", "-"))
    (project / "pyproject.toml").write_text(pyproject)
    return project


def mcphost(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real ``mcphost`` command on ``home``; fail with its output unless it worked."""
    proc = run_mcphost(*args, home=home, timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"mcphost {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
    return proc


@dataclass
class Secrets:
    """What the host holds and no plugin may get: every value is random per run."""

    canary: str = field(default_factory=lambda: "canary-" + secrets.token_hex(16))
    env: str = field(default_factory=lambda: "envsecret-" + secrets.token_hex(16))
    note: str = field(default_factory=lambda: "notesecret-" + secrets.token_hex(16))

    def all(self) -> list[str]:
        return [self.canary, self.env, self.note]


@dataclass
class Installed:
    """A home with notes and every attack plugin installed, and what the host holds."""

    home: Home
    user_home: Path
    canary_file: Path
    secrets: Secrets
    notes_version_dir: Path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, signing_key: PrivateKey) -> Installed:
    """Build, sign and install notes and every attack plugin with the real CLI."""
    require_bwrap()
    root = tmp_path_factory.mktemp("attacks")
    projects = [_write_distribution(name, root / "src") for name in PERMISSIONS]
    # A copy of notes: building writes into the project's directory.
    notes = root / "src" / "notes"
    shutil.copytree(EXAMPLES / "notes", notes, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    raw = root / "raw"
    build_wheels([notes, *projects], raw)
    signed = root / "signed"
    wheels: dict[str, Path] = {}
    for wheel in sorted(raw.glob("*.whl")):
        dist = wheel.name.split("-")[0]
        name = dist.removeprefix("mcphost_attack_") if dist.startswith("mcphost_attack_") else ""
        permissions = PERMISSIONS[name] if name else Permissions()
        wheels[name or "notes"] = sign_wheel(
            wheel, signing_key, permissions=permissions, out=signed
        )
    assert set(wheels) == {"notes", *PERMISSIONS}, sorted(wheels)

    home = Home(root / "home").ensure()
    home.config_file.write_text(CONFIG)
    public = root / "publisher.pub"
    public.write_bytes(signing_key.public_key.pem())
    mcphost(home.root, "keys", "trust", str(public), "--name", "attack suite publisher")
    # Installs queue on the registry's lock; starting the next CLI meanwhile saves time.
    with ThreadPoolExecutor(3) as pool:
        jobs = [
            pool.submit(mcphost, home.root, "plugin", "install", str(w), "--yes")
            for w in wheels.values()
        ]
        for job in jobs:
            job.result()

    sec = Secrets()
    user_home = root / "user"
    (user_home / ".ssh").mkdir(parents=True)
    canary = user_home / ".ssh" / "id_canary"
    canary.write_text(sec.canary + "\n")
    # Another plugin's private data: a note only notes itself may read.
    notes_data = home.plugin_data("notes")
    notes_data.mkdir(parents=True, exist_ok=True)
    (notes_data / "secret.json").write_text(json.dumps({"title": "secret", "body": sec.note}))
    (notes_version,) = home.versions_dir.glob("notes/*")
    return Installed(home, user_home, canary, sec, notes_version)


# -- the host, over MCP on stdio -----------------------------------------------------


@dataclass
class Outcome:
    """What the MCP client got from one tools/call."""

    is_error: bool
    text: str
    value: Any = None


class Server:
    """``mcphost serve`` over stdio: the host every attack runs in, and its log."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, pass_fds: tuple[int, ...]):
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            env=env,
            pass_fds=pass_fds,
        )
        self._buf = b""
        self._ids = iter(range(1, 1 << 30))
        self.request(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "attack-suite", "version": "0"},
            },
        )
        self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def _read(self, deadline: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("mcphost serve did not answer in time")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise EOFError(f"mcphost serve exited (status {self.proc.wait()})")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def request(self, method: str, params: dict[str, Any], timeout: float = 60) -> Any:
        rid = next(self._ids)
        self._send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        deadline = time.monotonic() + timeout
        while True:
            message = self._read(deadline)
            if message.get("id") == rid and "method" not in message:
                return message

    def call(self, tool: str, args: dict[str, Any], timeout: float = 60) -> Outcome:
        """Call a tool as an MCP client does; a JSON-RPC error is an error outcome too."""
        message = self.request("tools/call", {"name": tool, "arguments": args}, timeout)
        if "error" in message:
            return Outcome(True, json.dumps(message["error"]))
        result = message["result"]
        text = "".join(c.get("text", "") for c in result.get("content", []))
        value = result.get("structuredContent")
        if value is None and not result.get("isError"):
            value = json.loads(text)
        return Outcome(bool(result.get("isError")), text, value)

    def attack(self, name: str, args: dict[str, Any] | None = None) -> Outcome:
        return self.call(f"attack_{name}.attack", args or {})

    def log_text(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")

    def close(self) -> int:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._log_file.close()


@dataclass
class AttackedHost:
    """The running server and what the tests planted around it."""

    server: Server
    installed: Installed
    inherited_fd: int
    listener: socket.socket
    #: Unix sockets the host listens on: an abstract one and one in the user's home.
    unix_listeners: list[socket.socket]

    @property
    def secrets(self) -> Secrets:
        return self.installed.secrets

    @property
    def home(self) -> Home:
        return self.installed.home

    def check_contained(self, outcome: Outcome, attack: str) -> None:
        """What must hold after every attack: nothing leaked, the host up and serving."""
        for secret in self.secrets.all():
            assert secret not in outcome.text, f"{attack}: a secret is in what the caller got"
            assert secret not in json.dumps(outcome.value), f"{attack}: a secret leaked"
        log = self.server.log_text()
        for secret in self.secrets.all():
            assert secret not in log, f"{attack}: a secret is in the host's log"
        # The host's own code never failed (plugin output is logged with a prefix).
        assert "\nTraceback" not in log, log[-4000:]
        assert self.server.proc.poll() is None, f"{attack}: the host process exited"
        status = psutil.Process(self.server.pid).status()
        assert status not in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE), status
        for listener in (self.listener, *self.unix_listeners):
            with pytest.raises(BlockingIOError):
                listener.accept()
        # Another plugin is served as before, in the same host.
        title = f"after-{attack}-{secrets.token_hex(4)}"
        saved = self.server.call("notes.save", {"title": title, "body": attack})
        assert not saved.is_error, saved.text
        read = self.server.call("notes.read", {"title": title})
        assert (read.is_error, read.value) == (False, {"result": attack}), read


@pytest.fixture(scope="module")
def host(installed: Installed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AttackedHost]:
    """``mcphost serve`` holding the canary fd and the secret env var, with a listener."""
    # An fd on the canary, inheritable, at a number no worker uses for its own files.
    opened = os.open(installed.canary_file, os.O_RDONLY)
    fd = os.dup2(opened, INHERITED_FD, inheritable=True)
    os.close(opened)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    unix_listeners = []
    for address in ("\0" + UNIX_ABSTRACT, str(installed.user_home / UNIX_PATH)):
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind(address)
        unix.listen()
        unix.setblocking(False)
        unix_listeners.append(unix)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(installed.user_home),
        "MCPHOST_TEST_SECRET": installed.secrets.env,
        "AWS_SECRET_ACCESS_KEY": installed.secrets.env,
        "LANG": "C.UTF-8",
        **environment(),  # coverage's, while the suite measures it
    }
    log = tmp_path_factory.mktemp("attack-log") / "serve.log"
    argv = [
        *mcphost_command(),
        "-v",
        "--home",
        str(installed.home.root),
        "serve",
        "--no-environment",
    ]
    server = Server(argv, env, log, pass_fds=(fd,))
    try:
        yield AttackedHost(server, installed, fd, listener, unix_listeners)
    finally:
        pid = server.pid
        try:
            assert server.close() == 0, server.log_text()[-4000:]
        finally:
            os.close(fd)
            for sock in (listener, *unix_listeners):
                sock.close()
        _assert_nothing_left(installed.home, pid)


def _assert_nothing_left(home: Home, host_pid: int) -> None:
    """No process of the host's workers outlives it, and none of their cgroups either.

    A jail's command line names no host path; its worker's names the worker's cgroup,
    which is named after the host's pid, and bubblewrap runs in the worker's scratch
    directory under the home."""
    root = str(home.root)
    mark = re.compile(rf'"cgroup":"mcphost-[^"]*-{host_pid}-\d+"')
    left = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        ours = mark.search(cmdline) is not None or root in (proc.info["cwd"] or "")
        if ours and proc.pid != os.getpid():
            left.append((proc.pid, cmdline[:200]))
    assert not left, f"processes outlived the host: {left}"
    assert _cgroups_of(host_pid) == [], "cgroups outlived the host"


def _cgroups_of(host_pid: int) -> list[str]:
    """Worker cgroups that the host process ``host_pid`` created and did not remove."""
    cg = BubblewrapBackend().cgroups()
    if cg is None:
        return []
    parents = [cg.v2_parent] if cg.v2_parent else list(cg.v1_parents.values())
    return [
        os.path.join(parent, name)
        for parent in parents
        for name in os.listdir(parent)
        if name.startswith("mcphost-") and f"-{host_pid}-" in name
    ]


def _assert_no_jail_left_here() -> None:
    """No jail this test process started is left: no bubblewrap (or zombie) child of it,
    no cgroup named after it. The jail thread finishes in the background: wait a little."""
    deadline = time.monotonic() + 5
    while True:
        left = [
            (p.pid, p.name(), p.status())
            for p in psutil.Process().children()
            if p.name() == "bwrap" or p.status() == psutil.STATUS_ZOMBIE
        ]
        cgroups = _cgroups_of(os.getpid())
        if not (left or cgroups) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert left == [], f"jails outlived their start: {left}"
    assert cgroups == [], f"cgroups outlived their jail: {cgroups}"


# -- the attacks ---------------------------------------------------------------------


def _not_errnos(values: dict[str, Any]) -> dict[str, Any]:
    """The entries of an attack's report that are not an error number: what it got."""
    return {k: v for k, v in values.items() if not isinstance(v, int)}


def _crashed(out: Outcome, plugin: str, *why: str) -> None:
    """The caller was told the worker of ``plugin`` crashed, and why."""
    assert out.is_error, out
    assert out.text.startswith("error [worker_crashed]: worker for attack_" + plugin), out.text
    for words in why:
        assert words in out.text, out.text


def test_plugin_security_canary_file(host: AttackedHost) -> None:
    out = host.server.attack("canary_file", {"paths": [str(host.installed.canary_file)]})
    assert not out.is_error, out.text
    # Not mounted: the host user's home does not exist in the jail.
    assert _not_errnos(out.value) == {}, out.value
    assert errno.ENOENT in out.value.values(), out.value
    host.check_contained(out, "canary_file")


def test_plugin_security_other_files(host: AttackedHost) -> None:
    home = host.home
    notes_data = home.plugin_data("notes")
    (notes_module,) = host.installed.notes_version_dir.rglob("mcphost_notes/__init__.py")
    read = [
        str(REPO / "pyproject.toml"),
        str(REPO / ".git" / "HEAD"),
        str(Path(__file__)),
        str(notes_module),
        str(notes_data / "secret.json"),
        str(home.registry_db),
        str(home.audit_log),
        str(home.config_file),
        *map(str, home.keys_dir.glob("*.pub")),
        *map(str, home.store_dir.glob("*.whl")),
    ]
    listing = [
        str(REPO),
        str(REPO / "tests"),
        str(home.root),
        str(home.versions_dir),
        str(home.data_dir),
        str(notes_data),
        str(host.installed.notes_version_dir),
    ]
    out = host.server.attack("other_files", {"read": read, "listing": listing})
    assert not out.is_error, out.text
    assert _not_errnos(out.value["read"]) == {}, out.value["read"]
    seen = out.value["listing"]
    # Only what is mounted for the worker shows: mcphost's own code (from the checkout,
    # in an editable install) and the plugin's own directories, with empty directories
    # on the way to them. Nothing of another plugin, the registry, keys or the store.
    code = {Path(p).relative_to(REPO).parts[0] for p in code_paths() if p.startswith(f"{REPO}/")}
    assert isinstance(seen[str(REPO)], int) or set(seen[str(REPO)]) <= code, seen
    # Its own code and data are at /app and /data: nothing of the home is there at all.
    for path in (
        home.root,
        home.versions_dir,
        home.data_dir,
        REPO / "tests",
        notes_data,
        host.installed.notes_version_dir,
    ):
        assert isinstance(seen[str(path)], int), seen
    assert seen[str(home.root)] == errno.ENOENT, seen
    host.check_contained(out, "other_files")


def test_plugin_security_write_outside(host: AttackedHost) -> None:
    home = host.home
    (notes_module,) = host.installed.notes_version_dir.rglob("mcphost_notes/__init__.py")
    site = Path(sysconfig.get_paths()["purelib"])
    targets = {
        home.config_file: "change the host's configuration",
        home.keys_dir / "attacker.pub": "trust its own key",
        home.registry_db: "rewrite the registry",
        home.plugin_data("notes") / "planted.json": "plant data for another plugin",
        notes_module: "change another plugin's code",
        site / "zz_attack.pth": "run code in every Python of the host",
        REPO / "attack.txt": "write into the repository",
        Path("/usr/lib/attack.txt"): "write into the system",
        Path("/etc/attack.txt"): "write into /etc",
    }
    before = {p: p.read_bytes() if p.exists() else None for p in targets}
    out = host.server.attack("write_outside", {"paths": [str(p) for p in targets]})
    assert not out.is_error, out.text
    # The control: its own data directory is writable.
    assert out.value.pop("own data dir") == "written", out.value
    # Everything else, its own installed code included, is refused.
    assert _not_errnos(out.value) == {}, out.value
    for path, what in targets.items():
        now = path.read_bytes() if path.exists() else None
        assert now == before[path], f"the plugin managed to {what}: {path}"
    assert (home.plugin_data("attack_write_outside") / "allowed.txt").exists()
    host.check_contained(out, "write_outside")


def test_plugin_security_tcp_loopback(host: AttackedHost) -> None:
    port = host.listener.getsockname()[1]
    out = host.server.attack("tcp_loopback", {"port": port})
    assert not out.is_error, out.text
    # A network namespace of its own: nothing listens on its loopback.
    assert _not_errnos(out.value) == {}, out.value
    assert out.value["127.0.0.1"] in (errno.ECONNREFUSED, errno.EACCES), out.value
    host.check_contained(out, "tcp_loopback")  # and the listener accepted nothing


def test_plugin_security_tcp_ungranted_port(host: AttackedHost) -> None:
    port = host.listener.getsockname()[1]
    out = host.server.attack("tcp_ungranted_port", {"port": port})
    assert not out.is_error, out.text
    # The host's network is shared (a port was granted); Landlock refuses every other port.
    assert out.value == {"127.0.0.1": errno.EACCES}, out.value
    host.check_contained(out, "tcp_ungranted_port")


def test_plugin_security_host_env(host: AttackedHost) -> None:
    out = host.server.attack("host_env", {"host_pid": host.server.pid})
    assert not out.is_error, out.text
    env = without_coverage(out.value["os.environ"])
    assert set(env) <= {
        *("PATH", "LANG", "HOME", "PWD", "TMPDIR", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"),
        "MCPHOST_LOOP",  # the host's choice of event loop, when it made one
    }, env
    assert out.value[f"/proc/{host.server.pid}/environ"] == errno.ENOENT, out.value
    host.check_contained(out, "host_env")


def test_plugin_security_fork_bomb(host: AttackedHost) -> None:
    out = host.server.attack("fork_bomb", {"most": 500})
    assert not out.is_error, out.text
    # The pids cgroup holds it at the declared 16 processes (the worker's own included).
    assert out.value["error"] == errno.EAGAIN, out.value
    assert out.value["children"] < 16, out.value
    host.check_contained(out, "fork_bomb")


def test_plugin_security_memory_bomb(host: AttackedHost) -> None:
    out = host.server.attack("memory_bomb", {"children": 4, "most_mb": 256})
    if out.is_error:
        # The kernel chose the worker itself to kill: a crash, named as such.
        _crashed(out, "memory_bomb")
    else:
        # RLIMIT_AS stops one process short of the declared 128 MiB; the memory cgroup
        # stops the children together: some are killed, the rest hold less than 128 MiB.
        assert out.value["in_process_mb"] < 128, out.value
        assert "SIGKILL" in out.value["children"], out.value
        # A child can be killed after it said what it grabbed: count those that lived.
        alive = [
            mb
            for mb, end in zip(out.value["children_mb"], out.value["children"], strict=True)
            if end == 0
        ]
        assert sum(alive) < 128, out.value
    host.check_contained(out, "memory_bomb")


def test_plugin_security_cpu_spin(host: AttackedHost) -> None:
    out = host.server.attack("cpu_spin")
    # RLIMIT_CPU ended it at its declared 2 seconds; the caller and the host's log say so.
    _crashed(out, "cpu_spin", "exited on signal SIGXCPU (it used up its CPU-time limit)")
    assert "worker for attack_cpu_spin 1.0.0" in host.server.log_text()
    assert "exited on signal SIGXCPU (it used up its CPU-time limit)" in host.server.log_text()
    host.check_contained(out, "cpu_spin")


def test_plugin_security_cpu_spin_forked(host: AttackedHost) -> None:
    out = host.server.attack("cpu_spin_forked", {"at_once": 2})
    # Each process's RLIMIT_CPU starts afresh; the cgroup counts them all.
    _crashed(out, "cpu_spin_forked", "CPU seconds", "over its limit of 2")
    host.check_contained(out, "cpu_spin_forked")


def test_plugin_security_fill_disk(host: AttackedHost) -> None:
    out = host.server.attack("fill_disk", {"most_mb": 64})
    assert not out.is_error, out.text
    # /tmp and the scratch directory are tmpfs of the declared 4 MiB; a data file stops
    # at the declared file size of 8 MiB.
    assert out.value["tmp"] == {"mb": 4, "error": errno.ENOSPC}, out.value
    assert out.value["scratch"] == {"mb": 4, "error": errno.ENOSPC}, out.value
    assert out.value["data"] == {"mb": 8, "error": errno.EFBIG}, out.value
    assert not Path("/tmp/fill").exists()
    host.check_contained(out, "fill_disk")


def test_plugin_security_signal_host(host: AttackedHost) -> None:
    out = host.server.attack("signal_host", {"host_pid": host.server.pid})
    assert not out.is_error, out.text
    # The host is not in the jail's pid namespace: no such process.
    for target in ("host SIGSTOP", "host SIGKILL", "host group SIGKILL"):
        assert out.value.pop(target) == errno.ESRCH, (target, out.value)
    # The jail's init runs as another uid (root host), or ignores SIGKILL sent from inside
    # its own namespace; either way the jail, and this call, lived on.
    assert set(out.value.values()) <= {errno.EPERM, "sent"}, out.value
    host.check_contained(out, "signal_host")


def test_plugin_security_ptrace_host(host: AttackedHost) -> None:
    out = host.server.attack("ptrace_host", {"host_pid": host.server.pid})
    assert not out.is_error, out.text
    # seccomp refuses ptrace and process_vm_readv whatever the target.
    assert out.value.pop("/proc/host/mem") == errno.ENOENT, out.value
    assert set(out.value.values()) == {errno.EPERM}, out.value
    host.check_contained(out, "ptrace_host")


def test_plugin_security_proc_view(host: AttackedHost) -> None:
    out = host.server.attack("proc_view", {"host_pid": host.server.pid})
    assert not out.is_error, out.text
    procs = out.value["procs"]
    # Its own pid namespace: the jail's init (bubblewrap) and the worker, nothing else.
    assert len(procs) <= 2 and out.value["me"] <= 2, procs
    assert out.value["host visible"] is False
    programs = {os.path.basename(c.split()[0]) for c in procs.values()}
    assert programs <= {"bwrap", os.path.basename(sys.executable)}, procs
    host.check_contained(out, "proc_view")


def test_plugin_security_inherited_fd(host: AttackedHost) -> None:
    out = host.server.attack("inherited_fd", {"fd": host.inherited_fd})
    assert not out.is_error, out.text
    assert out.value.get("error") == errno.EBADF, out.value
    # Nothing the worker holds points at the canary, whatever its number.
    held = out.value["held"]
    assert str(host.installed.canary_file) not in json.dumps(held), held
    host.check_contained(out, "inherited_fd")


def test_plugin_security_oversized_frame(host: AttackedHost) -> None:
    out = host.server.attack("oversized_frame")
    _crashed(out, "oversized_frame", "broke the wire protocol", "over the limit")
    host.check_contained(out, "oversized_frame")


def test_plugin_security_garbage_frame(host: AttackedHost) -> None:
    out = host.server.attack("garbage_frame")
    _crashed(out, "garbage_frame", "broke the wire protocol", "malformed frame")
    host.check_contained(out, "garbage_frame")


def test_plugin_security_output_flood(host: AttackedHost) -> None:
    out = host.server.attack("output_flood", {"long_mb": 8, "short_lines": 20000})
    assert (out.is_error, out.value) == (False, {"long_mb": 8, "short_lines": 20000}), out
    # Each line the host logs is bounded, however long the plugin's line was.
    longest = max(map(len, host.server.log_text().splitlines()))
    assert longest < 4096 + 200, longest
    assert psutil.Process(host.server.pid).memory_info().rss < 300 * 1024 * 1024
    host.check_contained(out, "output_flood")


def test_plugin_security_unix_socket(host: AttackedHost) -> None:
    path = str(host.installed.user_home / UNIX_PATH)
    out = host.server.attack("unix_socket", {"abstract": UNIX_ABSTRACT, "path": path})
    assert not out.is_error, out.text
    # Abstract sockets belong to a network namespace (and Landlock ABI 6 scopes them);
    # the socket file is not mounted.
    assert out.value["abstract"] in (errno.ECONNREFUSED, errno.EPERM), out.value
    assert out.value["path"] == errno.ENOENT, out.value
    host.check_contained(out, "unix_socket")  # and the listeners accepted nothing


def test_plugin_security_kernel_surface(host: AttackedHost) -> None:
    out = host.server.attack("kernel_surface")
    assert not out.is_error, out.text
    # The seccomp filter answers EPERM before the kernel looks at the arguments.
    assert out.value == dict.fromkeys(out.value, errno.EPERM), out.value
    host.check_contained(out, "kernel_surface")


def _without_mount_roots(mountinfo: str) -> str:
    """/proc/self/mountinfo less each mount's fourth field: the folder of its source file
    system the mount shows, which for a bind is the source's path there (see
    docs/security.md: no bind can hide it)."""
    return "\n".join(
        " ".join(fields[:3] + fields[4:])
        for fields in (line.split(" ") for line in mountinfo.splitlines())
    )


def test_plugin_security_host_layout(host: AttackedHost) -> None:
    home = str(host.home.root)
    guesses = [home, *(str(host.home.root / d) for d in ("versions", "data", "run"))]
    out = host.server.attack("host_layout", {"guesses": guesses})
    assert not out.is_error, out.text
    report = out.value
    # Where Landlock stops it listing a folder, it can still tell that the folder is there.
    assert report.pop("guessed") == [], report
    mountinfo = report["files"].pop("/proc/self/mountinfo")
    # The jail's init shows bubblewrap's command line: no bind, no home, no environment.
    init = report["files"]["/proc/1/cmdline"]
    words = init.split(" ")
    assert (os.path.basename(words[0]), words[1]) == ("bwrap", "--args"), init
    assert "--bind" not in init and "--setenv" not in init, init
    # The plugin's own directories are at fixed paths that say nothing of the host.
    assert report["data_dir"] == "/data", report
    assert report["cwd"] == report["environ"]["HOME"] == "/home/plugin", report
    assert report["module"].startswith("/app/0/"), report
    assert [p for p in report["sys.path"] if p.startswith("/app/")] == ["/app/0", "/app/1"]
    # Nothing it read, listed or was told names the home, nor any of its folders.
    assert home not in json.dumps(report), report
    assert home not in _without_mount_roots(mountinfo), mountinfo
    skeleton = [f"/{d}/attack_host_layout" for d in ("versions", "data", "run")]
    assert [d for d in report["dirs"] if any(s in d for s in skeleton)] == [], report["dirs"]
    host.check_contained(out, "host_layout")


def test_forked_children_sharing_a_workers_memory_are_not_counted_once_each(
    host: AttackedHost,
) -> None:
    # 48 MiB shared by the worker and 8 children: about 80 MiB in the worker's cgroup,
    # 600 MiB summed over the processes' resident sets. The declared limit is 128 MiB.
    args = {"buffer_mb": 48, "children": 8, "seconds": 1.0}
    out = host.server.attack("shared_pages", args)
    assert (out.is_error, out.value) == (False, {"children": 8, "statuses": [0] * 8}), out


def test_forked_children_sharing_memory_count_once_without_cgroups_too(
    host: AttackedHost,
) -> None:
    """The rlimits backend has no cgroup: the watch sums proportional set sizes."""

    async def call() -> Any:
        config = HostConfig(isolation="rlimits", ping_interval=0.25)
        async with Host(host.home, config=config, environment=False) as rlimits_host:
            args = {"buffer_mb": 48, "children": 8, "seconds": 1.0}
            return await rlimits_host.call("attack_shared_pages.attack", args)

    assert asyncio.run(call()) == {"children": 8, "statuses": [0] * 8}


# -- starts cut short ----------------------------------------------------------------

#: Harmless calls to eight plugins, each of which starts a worker.
STARTS: list[tuple[str, dict[str, Any]]] = [
    ("notes.list", {}),
    ("attack_canary_file.attack", {"paths": []}),
    ("attack_other_files.attack", {"read": [], "listing": []}),
    ("attack_write_outside.attack", {"paths": []}),
    ("attack_tcp_loopback.attack", {"port": 9}),
    ("attack_host_env.attack", {"host_pid": 0}),
    ("attack_proc_view.attack", {"host_pid": 0}),
    ("attack_inherited_fd.attack", {"fd": 999}),
]


def test_a_host_closed_while_its_workers_start_leaves_nothing_behind(
    installed: Installed,
) -> None:
    """Closing a host cancels the starts in flight, at any point of bubblewrap's own start.

    A bubblewrap killed before the jail's init armed its parent-death signal used to
    leave that init running, holding the worker's pipes: the start never finished (the
    host hung in close) and the init ended as an unreaped zombie.
    """
    rng = random.Random(4)
    config = HostConfig(isolation="bwrap", require_namespaces=True)
    fds_before = len(os.listdir("/proc/self/fd"))

    async def round_() -> None:
        async with Host(installed.home, config=config, environment=False) as host:
            calls = [asyncio.ensure_future(host.call(name, dict(args))) for name, args in STARTS]
            await asyncio.sleep(rng.uniform(0.0, 0.03))
        await asyncio.gather(*calls, return_exceptions=True)

    async def rounds() -> None:
        for _ in range(8):
            await asyncio.wait_for(round_(), 30)

    asyncio.run(rounds())
    _assert_no_jail_left_here()
    # The jails' fds were all closed (the jail thread keeps two of its own).
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 2


class _Recording(BubblewrapBackend):
    """The bubblewrap backend, keeping every launch plan it made."""

    def __init__(self) -> None:
        super().__init__()
        self.plans: list[LaunchPlan] = []

    def prepare(
        self, spec: WorkerSpec, channel_fd: int, *, command: list[str] | None = None
    ) -> LaunchPlan:
        plan = super().prepare(spec, channel_fd, command=command)
        self.plans.append(plan)
        return plan


def test_starts_cancelled_as_bubblewrap_starts_neither_hang_nor_leave_a_process(
    installed: Installed, tmp_path: Path
) -> None:
    """Cancel starts a few milliseconds in: while bubblewrap sets the jail up."""
    backend = _Recording()
    plugin_dir = installed.notes_version_dir / "plugin"
    rng = random.Random(7)

    def spec(n: int) -> WorkerSpec:
        return WorkerSpec(
            plugin="notes",
            version="1.0.0",
            entry="mcphost_notes:plugin",
            paths=[str(plugin_dir)],
            data_dir=str(tmp_path / "data" / str(n)),
            work_dir=str(tmp_path / "run" / str(n)),
        )

    async def rounds() -> list[str]:
        hung: list[str] = []
        for r in range(12):
            specs = [spec(r * 8 + i) for i in range(8)]
            starts = [asyncio.ensure_future(spawn_worker(s, backend)) for s in specs]
            await asyncio.sleep(rng.uniform(0.0, 0.003))
            for start in starts:
                start.cancel()
            done, pending = await asyncio.wait(starts, timeout=20)
            if pending:
                hung.append(f"round {r}: {len(pending)} starts never ended")
                for child in psutil.Process().children(recursive=True):
                    child.kill()  # let them end, to report instead of hanging
                await asyncio.wait(pending)
            for start in done:
                if not start.cancelled() and start.exception() is None:
                    await start.result().close()
        return hung

    assert asyncio.run(rounds()) == []
    # Every plan was released by spawn_worker itself (a cancelled start releases what it
    # prepared; a worker closed releases its jail): nothing is left for the test to do.
    assert backend.plans
    for plan in backend.plans:
        jail = getattr(plan.cleanup, "__self__", None)
        assert jail is not None, plan.cleanup
        assert jail.released.wait(10), f"a start left its jail unreleased ({plan.cwd})"
    _assert_no_jail_left_here()


class _Gated(BubblewrapBackend):
    """The bubblewrap backend, holding each prepared plan until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.plans: list[LaunchPlan] = []
        self.prepared = threading.Event()
        self.gate = threading.Event()

    def prepare(
        self, spec: WorkerSpec, channel_fd: int, *, command: list[str] | None = None
    ) -> LaunchPlan:
        plan = super().prepare(spec, channel_fd, command=command)
        self.plans.append(plan)
        self.prepared.set()
        self.gate.wait(30)
        return plan


def test_a_start_cancelled_while_its_jail_is_prepared_has_released_it_once_it_ends(
    installed: Installed, tmp_path: Path
) -> None:
    """The thread preparing a jail cannot be stopped: a start cancelled meanwhile waits
    for it and releases the plan it made (its cgroup) before it ends, so whoever cancelled
    it (a host closing) finds nothing left, even if its event loop ends right after."""
    backend = _Gated()
    spec = WorkerSpec(
        plugin="notes",
        version="1.0.0",
        entry="mcphost_notes:plugin",
        paths=[str(installed.notes_version_dir / "plugin")],
        data_dir=str(tmp_path / "data"),
        work_dir=str(tmp_path / "run"),
    )

    async def cancelled_start() -> bool:
        start = asyncio.ensure_future(spawn_worker(spec, backend))
        assert await asyncio.to_thread(backend.prepared.wait, 30), "prepare never ran"
        start.cancel()
        backend.gate.set()
        await asyncio.wait([start], timeout=30)
        assert start.cancelled(), start
        # The loop is held here: nothing it had left to run does the cleanup now.
        (plan,) = backend.plans
        jail = getattr(plan.cleanup, "__self__", None)
        assert jail is not None, plan.cleanup
        return bool(jail.released.wait(10))

    assert asyncio.run(cancelled_start()), "the cancelled start left its jail to be released"
    _assert_no_jail_left_here()
