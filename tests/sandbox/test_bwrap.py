"""The bubblewrap jail, probed from inside by real jailed processes.

Each test builds the launch plan a worker would get, runs a small Python probe in the
worker's place (spawned exactly as the host spawns workers) and checks what the probe
could and could not do.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest
from bwrap_check import (
    has_cgroups,
    require_bwrap,
    require_cgroups,
    require_landlock,
    require_root,
)
from support.subprocess_coverage import without_coverage

from mcphost.sandbox.bwrap import NOBODY, BubblewrapBackend, code_paths, exit_status
from mcphost.sandbox.isolation import Grants, LaunchPlan, Limits, WorkerSpec, runtime_paths
from mcphost.sandbox.layout import DATA, HOME
from mcphost.sdk.errors import ConfigError

pytestmark = pytest.mark.bwrap

REPO = Path(__file__).resolve().parents[2]
ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def backend() -> BubblewrapBackend:
    b = BubblewrapBackend()
    require_bwrap()
    return b


@pytest.fixture
def spec(tmp_path: Path) -> WorkerSpec:
    (tmp_path / "data").mkdir()
    (tmp_path / "work").mkdir()
    return WorkerSpec(
        plugin="probe",
        version="1.0",
        entry="probe:plugin",
        paths=[],
        data_dir=str(tmp_path / "data"),
        work_dir=str(tmp_path / "work"),
    )


@dataclass
class Outcome:
    returncode: int
    out: Any
    stderr: str


def run_in_jail(
    backend: BubblewrapBackend, spec: WorkerSpec, code: str, timeout: float = 60
) -> Outcome:
    """Run ``code`` where the worker would run, spawned as the host spawns workers.

    The probe prints one JSON document; ``out`` is it decoded (``None`` if none).
    """
    host_sock, child_sock = socket.socketpair()
    try:
        plan = backend.prepare(
            spec, child_sock.fileno(), command=[sys.executable, "-I", "-B", "-c", code]
        )
        try:
            proc = subprocess.Popen(
                plan.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=plan.env,
                cwd=plan.cwd,
                pass_fds=plan.pass_fds,
                close_fds=True,
                preexec_fn=plan.preexec_fn,
                start_new_session=True,
            )
        finally:
            child_sock.close()
        if plan.on_spawn is not None:
            plan.on_spawn(proc.pid)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        finally:
            proc.kill()
            proc.wait()
            if plan.cleanup is not None:
                plan.cleanup()
    finally:
        host_sock.close()
    text = stdout.decode().strip()
    return Outcome(proc.returncode, json.loads(text) if text else None, stderr.decode())


def probe(body: str) -> str:
    """A probe script: ``body`` fills the dict ``out``, which is printed as JSON."""
    return "import json, os, sys\nout = {}\n" + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"


def with_limits(spec: WorkerSpec, **limits: int | None) -> WorkerSpec:
    return msgspec.structs.replace(spec, limits=msgspec.structs.replace(Limits(), **limits))


def with_grants(spec: WorkerSpec, **grants: Any) -> WorkerSpec:
    return msgspec.structs.replace(spec, grants=Grants(**grants))


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.setblocking(False)
    yield srv
    srv.close()


CONNECT = """
import socket
s = socket.socket()
s.settimeout(5)
try:
    s.connect(("127.0.0.1", {port}))
    out["connected"] = True
except OSError as exc:
    out["connected"] = False
    out["error"] = exc.errno
"""


@pytest.mark.parametrize("landlock", [True, False], ids=["landlock", "namespace-only"])
def test_jailed_process_cannot_reach_a_listener_on_the_host_loopback(
    spec: WorkerSpec, listener: socket.socket, landlock: bool
) -> None:
    backend = BubblewrapBackend(use_landlock=landlock)
    require_bwrap()
    port = listener.getsockname()[1]
    res = run_in_jail(backend, spec, probe(CONNECT.format(port=port)))
    assert res.out is not None, res.stderr
    assert res.out["connected"] is False
    # Landlock refuses first where it can; the jail's own loopback has no listener.
    expected = errno.EACCES if backend.landlock_abi() >= 4 else errno.ECONNREFUSED
    assert res.out["error"] in (expected, errno.ENETUNREACH)
    with pytest.raises(BlockingIOError):
        listener.accept()


def test_network_grant_lets_the_jailed_process_reach_the_host_loopback(
    backend: BubblewrapBackend, spec: WorkerSpec, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    res = run_in_jail(backend, with_grants(spec, network=["*"]), probe(CONNECT.format(port=port)))
    assert res.out == {"connected": True}, res.stderr
    conn, _ = listener.accept()
    conn.close()


@pytest.mark.parametrize("landlock", [True, False], ids=["landlock", "mounts-only"])
def test_host_home_repository_and_host_files_are_not_visible(
    spec: WorkerSpec, tmp_path: Path, landlock: bool
) -> None:
    backend = BubblewrapBackend(use_landlock=landlock)
    require_bwrap()
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    home = os.path.expanduser("~")
    res = run_in_jail(
        backend,
        spec,
        probe(
            f"""
            def ls(p):
                try:
                    return sorted(os.listdir(p))
                except OSError as exc:
                    return exc.errno
            out["secret"] = os.path.exists({str(secret)!r})
            out["home"] = ls({home!r})
            out["repo"] = ls({str(REPO)!r})
            out["git"] = os.path.exists({str(REPO / ".git")!r})
            out["tests"] = os.path.exists({str(REPO / "tests")!r})
            out["etc"] = ls("/etc")
            """
        ),
    )
    assert res.out is not None, res.stderr
    assert res.out["secret"] is False
    assert res.out["git"] is False and res.out["tests"] is False
    # Only the folders that lead to the interpreter and mcphost's code are there.
    needed = {Path(p).relative_to(REPO).parts[0] for p in code_paths() if _under(p, REPO)}
    repo_seen = res.out["repo"]
    # Unlisted (an errno: not there, or refused by Landlock) or only the needed folders.
    assert isinstance(repo_seen, int) or set(repo_seen) <= needed
    needed_home = {Path(p).relative_to(home).parts[0] for p in code_paths() if _under(p, home)}
    home_seen = res.out["home"]
    assert isinstance(home_seen, int) or set(home_seen) <= needed_home
    assert "ld.so.cache" in res.out["etc"]
    assert "passwd" not in res.out["etc"] and "shadow" not in res.out["etc"]


def _under(path: str, root: str | Path) -> bool:
    return Path(path).is_relative_to(root) and Path(path) != Path(root)


def test_proc_shows_only_the_jails_own_processes(
    backend: BubblewrapBackend, spec: WorkerSpec
) -> None:
    res = run_in_jail(
        backend,
        spec,
        probe(
            """
            pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
            out["pids"] = pids
            out["me"] = os.getpid()
            out["cmdlines"] = [open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")
                               for p in pids]
            """
        ),
    )
    assert res.out is not None, res.stderr
    assert len(res.out["pids"]) <= 3, res.out
    assert res.out["me"] <= 3
    # The jail's init (bubblewrap) and the probe itself; never the test runner.
    programs = {c.split("\0")[0] for c in res.out["cmdlines"]}
    assert programs <= {backend.bwrap, sys.executable}, programs


@pytest.mark.parametrize("landlock", [True, False], ids=["landlock", "mounts-only"])
def test_only_the_data_scratch_and_tmp_directories_are_writable(
    spec: WorkerSpec, tmp_path: Path, landlock: bool
) -> None:
    backend = BubblewrapBackend(use_landlock=landlock)
    require_bwrap()
    plugin_code = tmp_path / "plugin"
    plugin_code.mkdir()
    spec = msgspec.structs.replace(spec, paths=[str(plugin_code)])
    targets = {
        "data": DATA,
        "work": HOME,
        "tmp": "/tmp",
        "plugin": "/app/0",
        "prefix": sys.prefix,
        "stdlib": os.path.dirname(os.__file__),
        "mcphost": runtime_paths()[-1],
        "usr": "/usr",
        "root": "/",
        "etc": "/etc",
        "dev": "/dev",
        "proc": "/proc",
    }
    res = run_in_jail(
        backend,
        spec,
        probe(
            f"""
            for key, d in {targets!r}.items():
                try:
                    with open(os.path.join(d, "written-from-jail"), "w") as f:
                        f.write("x")
                    out[key] = "ok"
                except OSError as exc:
                    out[key] = exc.errno
            """
        ),
    )
    assert res.out is not None, res.stderr
    writable = {k for k, v in res.out.items() if v == "ok"}
    assert writable == {"data", "work", "tmp"}, res.out
    assert Path(spec.data_dir, "written-from-jail").read_text() == "x"
    assert not (plugin_code / "written-from-jail").exists()


def test_tmp_is_private_to_the_jail_and_bounded_in_size(
    backend: BubblewrapBackend, spec: WorkerSpec
) -> None:
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="mcphost-host-") as host_file:
        res = run_in_jail(
            backend,
            with_limits(spec, tmp_mb=4),
            probe(
                f"""
                out["host_file_seen"] = os.path.exists({host_file.name!r})
                out["listing"] = os.listdir("/tmp")
                written = 0
                try:
                    with open("/tmp/mcphost-jail-file", "wb") as f:
                        for _ in range(64):
                            f.write(b"x" * 1024 * 1024)
                            f.flush()
                            written += 1
                except OSError as exc:
                    out["error"] = exc.errno
                out["written_mb"] = written
                """
            ),
        )
    assert res.out is not None, res.stderr
    assert res.out["host_file_seen"] is False
    assert res.out["error"] == errno.ENOSPC
    assert res.out["written_mb"] < 5
    assert not Path("/tmp/mcphost-jail-file").exists()


FORK_BOMB = """
import time
r, w = os.pipe()
children = 0
try:
    for _ in range(500):
        pid = os.fork()
        if pid == 0:
            os.close(w)
            os.read(r, 1)
            os._exit(0)
        children += 1
except OSError as exc:
    out["error"] = exc.errno
out["children"] = children
os.close(w)
for _ in range(children):
    os.wait()
"""


def _need_cgroups(backend: BubblewrapBackend) -> None:
    require_cgroups(backend)


def test_fork_bomb_is_stopped_by_the_workers_pids_cgroup(
    backend: BubblewrapBackend, spec: WorkerSpec
) -> None:
    _need_cgroups(backend)
    res = run_in_jail(backend, with_limits(spec, processes=16), probe(FORK_BOMB))
    assert res.out is not None, res.stderr
    assert res.out["error"] == errno.EAGAIN
    assert res.out["children"] < 16


MEMORY_BOMB = """
chunks = []
for _ in range(64):
    chunk = bytearray(16 * 1024 * 1024)
    chunk[::4096] = b"x" * len(chunk[::4096])
    chunks.append(chunk)
out["survived_mb"] = 16 * len(chunks)
"""


def test_memory_bomb_is_stopped_by_the_workers_memory_cgroup(
    backend: BubblewrapBackend, spec: WorkerSpec
) -> None:
    _need_cgroups(backend)
    res = run_in_jail(backend, with_limits(spec, memory_mb=96), probe(MEMORY_BOMB))
    assert res.out is None, res.out
    # Killed by the kernel's OOM killer in its cgroup (SIGKILL), not failing some other
    # way (a MemoryError from an rlimit, a probe that did not start).
    assert exit_status(res.returncode) == -signal.SIGKILL, (res.returncode, res.stderr)
    assert "Error" not in res.stderr, res.stderr


def test_a_worker_within_its_memory_limit_is_not_stopped(
    backend: BubblewrapBackend, spec: WorkerSpec
) -> None:
    _need_cgroups(backend)
    res = run_in_jail(backend, with_limits(spec, memory_mb=2048), probe(MEMORY_BOMB))
    assert res.out == {"survived_mb": 1024}, res.stderr


def test_only_the_channel_fd_is_inherited(backend: BubblewrapBackend, spec: WorkerSpec) -> None:
    leaked = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(leaked, True)
    try:
        res = run_in_jail(
            backend,
            spec,
            probe(
                """
                fds = {}
                for fd in os.listdir("/proc/self/fd"):
                    try:
                        fds[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
                    except OSError:
                        pass
                out["fds"] = {k: v for k, v in fds.items() if not v.startswith("/proc/")}
                """
            ),
        )
    finally:
        os.close(leaked)
    assert res.out is not None, res.stderr
    fds = {int(k): v for k, v in res.out["fds"].items()}
    assert set(fds) - {0, 1, 2} == {next(k for k, v in fds.items() if v.startswith("socket:"))}
    assert sum(v.startswith("socket:") for k, v in fds.items() if k > 2) == 1
    assert leaked not in fds or fds[leaked].startswith("socket:")


SYSCALLS = """
import ctypes, pty, fcntl, termios, signal
libc = ctypes.CDLL(None, use_errno=True)

def err(ret):
    return 0 if ret == 0 else ctypes.get_errno()

CLONE_NEWUSER = 0x10000000
PTRACE_ATTACH = 16
child = os.fork()
if child == 0:
    os.read(os.open("/dev/zero", os.O_RDONLY), 1)
    signal.pause()
    os._exit(0)
out["ptrace"] = err(libc.ptrace(PTRACE_ATTACH, child, None, None))
os.kill(child, signal.SIGKILL)
os.waitpid(child, 0)
pid = os.fork()
if pid == 0:
    os._exit(err(libc.unshare(CLONE_NEWUSER)))
out["unshare_newuser"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
pid = os.fork()
if pid == 0:
    # A session leader with the pty as its controlling terminal: the one case in which
    # the kernel itself lets TIOCSTI through.
    os.setsid()
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    try:
        fcntl.ioctl(slave, termios.TIOCSTI, b"x")
        os._exit(0)
    except OSError as exc:
        os._exit(exc.errno)
out["tiocsti"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
out["mount"] = err(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
out["fork_works"] = True
"""


def test_seccomp_refuses_ptrace_new_user_namespaces_and_tiocsti(
    backend: BubblewrapBackend, spec: WorkerSpec
) -> None:
    if not backend.use_seccomp or not _seccomp_ok():
        pytest.fail("seccomp is unavailable: pip install pyseccomp (in the test extra)")
    res = run_in_jail(backend, spec, probe(SYSCALLS))
    assert res.out == {
        "ptrace": errno.EPERM,
        "unshare_newuser": errno.EPERM,
        "tiocsti": errno.EPERM,
        "mount": errno.EPERM,
        "fork_works": True,
    }, res.stderr


def test_without_the_seccomp_filter_the_same_probe_gets_further(spec: WorkerSpec) -> None:
    """The control for the test above: the filter, not something else, refuses those."""
    bare = BubblewrapBackend(use_seccomp=False)
    require_bwrap()
    res = run_in_jail(bare, spec, probe(SYSCALLS))
    assert res.out is not None, res.stderr
    assert res.out["ptrace"] == 0
    assert res.out["tiocsti"] != errno.EPERM
    assert res.out["unshare_newuser"] != errno.EPERM or not ROOT


def _seccomp_ok() -> bool:
    from mcphost.sandbox.seccomp import seccomp_status

    return seccomp_status()[0]


def test_environment_is_clean_except_granted_variables(
    backend: BubblewrapBackend, spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCPHOST_TEST_SECRET", "do-not-leak")
    monkeypatch.setenv("MCPHOST_TEST_GRANTED", "granted")
    res = run_in_jail(
        backend,
        with_grants(spec, env=["MCPHOST_TEST_GRANTED"]),
        probe("out.update(os.environ)"),
    )
    assert res.out is not None, res.stderr
    assert "MCPHOST_TEST_SECRET" not in res.out
    assert res.out["MCPHOST_TEST_GRANTED"] == "granted"
    assert set(without_coverage(res.out)) <= {
        "PATH",
        "LANG",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "HOME",
        "TMPDIR",
        "PWD",
        "MCPHOST_TEST_GRANTED",
        "MCPHOST_LOOP",  # the host's choice of event loop, when it made one
    }
    assert res.out["HOME"] == HOME


def test_root_host_runs_the_worker_as_an_unprivileged_uid_without_capabilities(
    backend: BubblewrapBackend, spec: WorkerSpec
) -> None:
    require_root("the uid drop happens only when the host is root")
    res = run_in_jail(
        backend,
        spec,
        probe(
            """
            out["ids"] = [os.getuid(), os.geteuid(), os.getgid(), os.getegid()]
            out["groups"] = os.getgroups()
            status = dict(l.split(":\\t", 1) for l in open("/proc/self/status").read().splitlines()
                          if ":\\t" in l)
            out["caps"] = {k: status[k].strip() for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb")}
            out["nnp"] = status["NoNewPrivs"].strip()
            """
        ),
    )
    assert res.out is not None, res.stderr
    assert res.out["ids"] == [NOBODY] * 4
    assert res.out["groups"] in ([], [NOBODY])
    assert set(res.out["caps"].values()) == {"0000000000000000"}
    assert res.out["nnp"] == "1"
    assert os.stat(spec.data_dir).st_uid == NOBODY


def bwrap_args(plan: LaunchPlan) -> list[str]:
    """The options bubblewrap reads from its ``--args`` fd (before the plan is spawned)."""
    fd = int(plan.argv[plan.argv.index("--args") + 1])
    data = os.pread(fd, os.fstat(fd).st_size, 0)
    return [a.decode() for a in data.split(b"\0")[:-1]]


def test_launch_plan_unshares_the_network_unless_granted(
    backend: BubblewrapBackend, spec: WorkerSpec
) -> None:
    closed_plan = backend.prepare(spec, 0)
    granted_plan = backend.prepare(with_grants(spec, network=["example.org:443"]), 0)
    closed, granted = bwrap_args(closed_plan), bwrap_args(granted_plan)
    for plan in (closed_plan, granted_plan):
        assert plan.cleanup is not None
        plan.cleanup()
    unshared_all = "--unshare-all" in closed and "--share-net" not in closed
    assert "--unshare-net" in closed or unshared_all
    assert "--unshare-net" not in granted
    assert "--unshare-all" not in granted or "--share-net" in granted


LAYOUT = """
def link(path):
    try:
        return os.readlink(path)
    except OSError as exc:
        return exc.errno
out["init"] = open("/proc/1/cmdline", "rb").read().decode()
out["self"] = open("/proc/self/cmdline", "rb").read().decode()
out["environ"] = dict(os.environ)
out["cwd"] = os.getcwd()
out["links"] = [link(f"/proc/{p}/{n}") for p in (1, "self") for n in ("cwd", "root")]
# Each mount's point and options; its fourth field is the source's own folder.
out["mounts"] = [l.split(" ", 4)[4] for l in open("/proc/self/mountinfo").read().splitlines()]
out["dirs"] = [root for root, names, _ in os.walk("/")
               if not root.startswith(("/proc", "/sys", "/dev", "/usr"))]
out["data"] = sorted(os.listdir("/data"))
out["app"] = sorted(os.listdir("/app/0"))
# Host paths a plugin might guess (kept in its data directory): are they there?
out["there"] = [p for p in json.load(open("/data/guesses.json")) if os.path.lexists(p)]
"""


@pytest.mark.parametrize("landlock", [True, False], ids=["landlock", "mounts-only"])
def test_the_jail_names_none_of_the_hosts_paths_for_the_workers_own_directories(
    tmp_path: Path, landlock: bool
) -> None:
    backend = BubblewrapBackend(use_landlock=landlock)
    require_bwrap()
    home = tmp_path / "mcphost-home"
    spec = WorkerSpec(
        plugin="probe",
        version="1.0",
        entry="probe:plugin",
        paths=[str(home / "versions" / "probe" / "1.0" / "plugin")],
        data_dir=str(home / "data" / "probe"),
        work_dir=str(home / "run" / "probe-1"),
    )
    for d in (*spec.paths, spec.data_dir, spec.work_dir):
        Path(d).mkdir(parents=True)
    Path(spec.paths[0], "probe.py").write_text("")
    guesses = [str(home), *(str(home / d) for d in ("versions", "data", "run"))]
    Path(spec.data_dir, "guesses.json").write_text(json.dumps(guesses))
    plan = backend.prepare(spec, 0)
    assert plan.cleanup is not None
    plan.cleanup()
    # bubblewrap's own command line and environment, which its init in the jail shares.
    assert str(home) not in " ".join(plan.argv) + json.dumps(plan.env)
    assert not {"--bind", "--ro-bind", "--setenv"} & set(plan.argv)
    res = run_in_jail(backend, spec, probe(LAYOUT))
    assert res.out is not None, res.stderr
    assert res.out.pop("there") == []
    assert str(home) not in json.dumps(res.out), res.out
    assert (res.out["data"], res.out["app"]) == (["guesses.json"], ["probe.py"])
    assert res.out["cwd"] == res.out["environ"]["HOME"] == HOME
    # Nor the home's folders, wherever they might be (the interpreter's own path may hold
    # a "versions" folder: pyenv's does).
    skeleton = ("/versions/probe", "/data/probe", "/run/probe")
    assert [d for d in res.out["dirs"] if any(s in d for s in skeleton)] == []


@pytest.mark.parametrize("granted", ["/data", "/data/shared", "/app", "/home", "/"])
def test_a_grant_over_the_jails_own_directories_is_refused_with_a_clear_error(
    backend: BubblewrapBackend, spec: WorkerSpec, granted: str
) -> None:
    match = f"the granted path '{granted}' overlaps the jail's own"
    with pytest.raises(ConfigError, match=match):
        backend.prepare(with_grants(spec, read_paths=[granted]), 0)


def test_an_interpreter_installed_over_the_jails_own_directories_is_named_as_the_clash(
    spec: WorkerSpec,
) -> None:
    from mcphost.sandbox.layout import overlaps

    assert overlaps(spec, ["/usr/lib/python3", "/opt/venv"]) is None
    clash = overlaps(spec, ["/opt/venv", "/data/venv"])
    assert clash == "the interpreter's or mcphost's folder '/data/venv'"


def test_missing_bwrap_binary_is_reported_as_unavailable_with_a_reason(tmp_path: Path) -> None:
    backend = BubblewrapBackend(bwrap=str(tmp_path / "no-such-bwrap"))
    ok, why = backend.available()
    assert ok is False
    assert "bubblewrap" in why
    report = backend.report()
    assert report.available is False and report.warnings == [why]


def test_killing_the_jail_leaves_no_process_zombie_or_cgroup_behind(
    backend: BubblewrapBackend, spec: WorkerSpec
) -> None:
    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    host_sock, child_sock = socket.socketpair()
    code = "import os, sys; print('ready', flush=True); os.read(int(sys.argv[1]), 1)"
    plan = backend.prepare(
        spec,
        child_sock.fileno(),
        command=[sys.executable, "-I", "-B", "-c", code, str(child_sock.fileno())],
    )
    proc = subprocess.Popen(
        plan.argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=plan.env,
        cwd=plan.cwd,
        pass_fds=plan.pass_fds,
        close_fds=True,
        preexec_fn=plan.preexec_fn,
        start_new_session=True,
    )
    child_sock.close()
    assert plan.on_spawn is not None and plan.cleanup is not None
    plan.on_spawn(proc.pid)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        jailed = [p for p in me.children(recursive=True) if p.pid not in before]
        assert len(jailed) >= 3  # bubblewrap, the jail's init, the probe
        probe_proc = next(p for p in jailed if p.name().startswith("python"))
        cgroup_dirs = [
            line.split(":", 2)[2]
            for line in Path(f"/proc/{probe_proc.pid}/cgroup").read_text().splitlines()
            if line.split(":")[1] in ("pids", "") and "mcphost-" in line
        ]
        pidfds = {p.pid: os.pidfd_open(p.pid) for p in jailed if p.pid != proc.pid}
        # What the supervisor does to a hung worker: kill bubblewrap's process group.
        os.killpg(proc.pid, 9)
        proc.wait(timeout=10)
    finally:
        host_sock.close()
        plan.cleanup()
    try:
        for pid, pidfd in pidfds.items():
            # Readable once the process has ended; it must not stay a zombie of ours.
            assert select.select([pidfd], [], [], 5.0)[0], f"jailed process {pid} still runs"
            with contextlib.suppress(FileNotFoundError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                assert not (fields[0] == "Z" and int(fields[1]) == os.getpid()), (
                    f"jailed process {pid} was left unreaped"
                )
    finally:
        for pidfd in pidfds.values():
            os.close(pidfd)
    if has_cgroups(backend):
        cgroups = backend.cgroups()
        assert cgroups is not None
        parent = cgroups.v2_parent or cgroups.v1_parents["pids"]
        assert cgroup_dirs, "the probe was not in a pids cgroup of its own"
        assert not Path(parent, Path(cgroup_dirs[0]).name).exists()


def _need_landlock(backend: BubblewrapBackend, abi: int = 1) -> None:
    require_landlock(backend, abi)


PROC_WRITE = """
try:
    with open("/proc/self/comm", "w") as f:
        f.write("renamed")
    out["comm"] = "ok"
except OSError as exc:
    out["comm"] = exc.errno
"""


def test_landlock_refuses_a_write_the_mounts_would_allow(
    backend: BubblewrapBackend, spec: WorkerSpec
) -> None:
    _need_landlock(backend)
    assert run_in_jail(backend, spec, probe(PROC_WRITE)).out == {"comm": errno.EACCES}
    # The control: without Landlock the same write goes through.
    bare = BubblewrapBackend(use_landlock=False)
    assert run_in_jail(bare, spec, probe(PROC_WRITE)).out == {"comm": "ok"}


def test_landlock_lets_a_network_grant_reach_only_the_granted_port(
    backend: BubblewrapBackend, spec: WorkerSpec, listener: socket.socket
) -> None:
    _need_landlock(backend, 4)
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen()
    granted, refused = listener.getsockname()[1], other.getsockname()[1]
    try:
        res = run_in_jail(
            backend,
            with_grants(spec, network=[f"127.0.0.1:{granted}"]),
            probe(
                f"""
                import socket
                for name, port in (("granted", {granted}), ("refused", {refused})):
                    s = socket.socket()
                    s.settimeout(5)
                    try:
                        s.connect(("127.0.0.1", port))
                        out[name] = "connected"
                    except OSError as exc:
                        out[name] = exc.errno
                    s.close()
                """
            ),
        )
    finally:
        other.close()
    assert res.out == {"granted": "connected", "refused": errno.EACCES}, res.stderr


def test_a_worker_outside_its_cgroups_refuses_to_run(tmp_path: Path) -> None:
    """The jail's first step checks the cgroup move before anything else runs."""
    from mcphost.sandbox.landlock import BOOTSTRAP, JailStart

    start = JailStart(cgroup="mcphost-never-created", cgroups=2)
    marker = tmp_path / "ran"
    program = [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    jail = msgspec.json.encode(start).decode()
    proc = subprocess.run(
        [sys.executable, "-I", "-B", "-c", BOOTSTRAP, "", "--exec", jail, "--", *program],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "refuses to run outside its limits" in proc.stderr
    assert not marker.exists()


def test_data_directory_is_given_to_the_worker_uid_but_hard_links_are_not(
    backend: BubblewrapBackend, spec: WorkerSpec, tmp_path: Path
) -> None:
    require_root("data directories change owner only when the host is root")
    host_file = tmp_path / "host-file"
    host_file.write_text("belongs to the host")
    os.link(host_file, Path(spec.data_dir, "linked"))
    Path(spec.data_dir, "own").write_text("the plugin's")
    plan = backend.prepare(spec, 0)
    assert plan.cleanup is not None
    plan.cleanup()
    assert Path(spec.data_dir, "own").stat().st_uid == NOBODY
    assert host_file.stat().st_uid == 0


@pytest.mark.parametrize(
    ("network", "ports"),
    [
        (None, []),
        (["*"], None),
        (["api.example.org:443", "[::1]:8080", "10.0.0.1:443"], [443, 8080]),
        (["api.example.org"], None),
    ],
    ids=["no-grant", "any", "host-port-entries", "host-without-port"],
)
def test_landlock_rules_allow_exactly_the_ports_a_network_grant_names(
    network: list[str] | None, ports: list[int] | None
) -> None:
    from mcphost.sandbox.landlock import rules_for

    rules = rules_for(["/code"], ["/data"], network)
    assert rules.connect_ports == ports
    assert "/code" in rules.read and "/data" in rules.write and "/tmp" in rules.write


def test_cgroups_left_by_a_host_that_died_are_swept_but_a_live_hosts_are_not(
    backend: BubblewrapBackend,
) -> None:
    from mcphost.sandbox.cgroups import CgroupManager

    _need_cgroups(backend)
    manager = CgroupManager.detect()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    parent = manager.v2_parent or next(iter(manager.v1_parents.values()))
    stale = Path(parent, f"mcphost-sweep-test-{dead_pid}-0")
    live = Path(parent, f"mcphost-sweep-test-{os.getpid()}-0")
    stale.mkdir()
    live.mkdir()
    try:
        an_hour_ago = time.time() - 3600
        for d in (stale, live):
            os.utime(d, (an_hour_ago, an_hour_ago))
        CgroupManager.detect()
        assert not stale.exists()
        assert live.exists()
    finally:
        for d in (stale, live):
            with contextlib.suppress(FileNotFoundError):
                d.rmdir()


HOST_THAT_EXITS = """
import json, os, socket, subprocess, sys
from mcphost.sandbox.bwrap import BubblewrapBackend
from mcphost.sandbox.isolation import WorkerSpec

data, work = sys.argv[1], sys.argv[2]
backend = BubblewrapBackend()
spec = WorkerSpec(plugin="probe", version="1", entry="x:y", paths=[], data_dir=data, work_dir=work)
host_sock, child_sock = socket.socketpair()
code = "import os, sys; print('ready', flush=True); os.read(int(sys.argv[1]), 1)"
plan = backend.prepare(spec, child_sock.fileno(),
                       command=[sys.executable, "-I", "-B", "-c", code, str(child_sock.fileno())])
proc = subprocess.Popen(plan.argv, stdout=subprocess.PIPE, env=plan.env, cwd=plan.cwd,
                        pass_fds=plan.pass_fds, close_fds=True, preexec_fn=plan.preexec_fn,
                        start_new_session=True)
plan.on_spawn(proc.pid)
assert proc.stdout.readline() == b"ready\\n"
manager = backend.cgroups()
parents = [manager.v2_parent] if manager.v2_parent else list(manager.v1_parents.values())
mine = [os.path.join(p, d) for p in parents for d in os.listdir(p) if f"-{os.getpid()}-" in d]
print(json.dumps(mine), flush=True)
# Exit with the worker still running and without plan.cleanup().
"""


def test_a_host_that_exits_without_cleaning_up_leaves_no_cgroup_behind(
    backend: BubblewrapBackend, spec: WorkerSpec, tmp_path: Path
) -> None:
    _need_cgroups(backend)
    script = tmp_path / "host.py"
    script.write_text(HOST_THAT_EXITS)
    proc = subprocess.run(
        [sys.executable, str(script), spec.data_dir, spec.work_dir],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    dirs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert dirs, "the worker had no cgroup"
    assert [d for d in dirs if Path(d).exists()] == []
    _reap_adopted_jails()


def _reap_adopted_jails(bound: float = 10.0) -> None:
    """This test process is a child subreaper (as every host is), so the jail the exited
    host left behind was adopted here: wait for it to end and reap it, or later tests
    that look for leftover jails would find it."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        adopted = [p for p in psutil.Process().children() if p.name() == "bwrap"]
        if not adopted:
            return
        for p in adopted:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(p.pid, os.WNOHANG)
        time.sleep(0.05)
    raise AssertionError(f"the exited host's jail did not end within {bound}s")
