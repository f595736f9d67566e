"""``mcphost status`` against a Host embedded in this test process: every field of
``--json`` against what happened (calls, a failure, a killed worker's restart, a setting
that needs a restart), the control socket's mode and peer check, stale sockets of dead
processes, no host at all, and ``--watch`` redrawing in a pseudo-terminal."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import pty
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import cli as support_cli

from mcphost.host import Home, Host
from mcphost.host.observe.control import ask, hosts_dir, sockets
from mcphost.host.sources import PluginSource
from mcphost.sdk.errors import InvalidArguments

MCPHOST = str(support_cli.MCPHOST)

WORK = """
import os
from mcphost.sdk import Plugin

plugin = Plugin("work")


@plugin.tool
def ok() -> str:
    return "ok"


@plugin.tool
def pid() -> int:
    return os.getpid()


@plugin.tool
def need(n: int) -> int:
    return n
"""


def run_status(home_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MCPHOST, "--home", str(home_dir), "status", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def only_host(out: str) -> dict[str, Any]:
    data = json.loads(out)
    (host,) = data["hosts"]
    assert isinstance(host, dict)
    return host


def test_status_json_of_an_embedded_host_shows_every_field_as_it_happened(
    home_dir: Path,
    make_host: Callable[..., Host],
    write_plugin_source: Callable[..., PluginSource],
    no_leftover_workers: None,
) -> None:
    work = write_plugin_source("work", WORK)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int, int, float]:
        async with make_host(sources=[work]) as host:
            t0 = time.time()
            crashed = asyncio.Event()
            host.add_listener(lambda e: crashed.set() if e.kind == "plugin_crashed" else None)
            for _ in range(5):
                assert await host.call("work.ok") == "ok"
            with pytest.raises(InvalidArguments):
                await host.call("work.need", {"n": "x"})
            first_pid = await host.call("work.pid")
            first = await asyncio.to_thread(run_status, home_dir, "--json")
            assert first.returncode == 0, first.stderr
            os.kill(first_pid, signal.SIGKILL)
            await asyncio.wait_for(crashed.wait(), 10)
            second_pid = await host.call("work.pid")
            # A setting that needs a restart, as the config watcher records it.
            host.reconfigure(host.config.model_copy(update={"isolation": "auto"}))
            second = await asyncio.to_thread(run_status, home_dir, "--json")
            assert second.returncode == 0, second.stderr
            return only_host(first.stdout), only_host(second.stdout), first_pid, second_pid, t0

    before, after, first_pid, second_pid, t0 = asyncio.run(scenario())
    for snap in (before, after):
        assert snap["pid"] == os.getpid()
        assert snap["home"] == str(Home(home_dir).root)
        assert snap["frontend"] is None  # embedded: no MCP front end
        assert snap["streams"] == [] and snap["queues"] == []
        assert snap["metrics"] is True
        assert 0 <= snap["uptime_seconds"] <= time.time() - t0 + 60
        assert Path(snap["socket"]).parent == hosts_dir(Home(home_dir).run_dir)
    (p,) = before["plugins"]
    assert (p["plugin"], p["version"], p["state"]) == ("work", "1.0.0", "running")
    assert p["pid"] == first_pid
    assert p["restarts"] == 0
    assert p["calls"] == 7 and p["errors"] == {"invalid_arguments": 1}
    assert p["in_flight"] == 0
    assert p["calls_per_second"] is not None and p["calls_per_second"] > 0
    assert 0 < p["p50_ms"] <= p["p99_ms"]
    assert p["memory_mb"] > 0 and p["memory_source"] in ("cgroup", "pss", "rss")
    assert p["cpu_seconds"] >= 0
    assert before["restart_pending"] == [] and before["config_error"] is None
    assert before["events"] == []

    (q,) = after["plugins"]
    assert q["pid"] == second_pid != first_pid
    assert q["restarts"] == 1
    assert q["calls"] == 8 and q["worker_calls"] == 1
    assert q["state"] == "running"
    assert [e["kind"] for e in after["events"]] == ["crash"]
    assert after["events"][0]["plugin"] == "work"
    assert after["restart_pending"] == [
        {"key": "isolation", "running": "rlimits", "configured": "auto"}
    ]


def test_status_text_is_a_table_per_host(
    home_dir: Path, make_host: Callable[..., Host], write_plugin_source: Callable[..., PluginSource]
) -> None:
    work = write_plugin_source("work", WORK)

    async def scenario() -> subprocess.CompletedProcess[str]:
        async with make_host(sources=[work]) as a, make_host(sources=[work]) as b:
            await a.call("work.ok")
            for _ in range(3):
                await b.call("work.ok")
            return await asyncio.to_thread(run_status, home_dir)

    done = asyncio.run(scenario())
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.count(f"host pid {os.getpid()}") == 2
    header = next(line for line in text.splitlines() if "PLUGIN" in line).split()
    assert header[:3] == ["PLUGIN", "VERSION", "STATE"] and "P99" in header
    rows = [line.split() for line in text.splitlines() if line.strip().startswith("work ")]
    # PLUGIN VERSION STATE PID MEM CPU RESTARTS IN-FLIGHT CALLS ...
    assert sorted(r[8] for r in rows) == ["1", "3"]
    assert all(r[1:3] == ["1.0.0", "running"] for r in rows)


def test_no_running_host_is_one_line_and_exit_1(home_dir: Path) -> None:
    Home(home_dir).ensure()
    for args in ((), ("--json",)):
        done = run_status(home_dir, *args)
        assert done.returncode == 1
        assert done.stdout == ""
        assert done.stderr.strip().splitlines() == [
            f"no mcphost host is running on the home {Home(home_dir).root}"
        ]


def test_the_control_socket_is_the_owners_alone_and_gone_when_the_host_closes(
    home_dir: Path, make_host: Callable[..., Host]
) -> None:
    async def scenario() -> Path:
        async with make_host() as host:
            assert host.control is not None
            path = host.control.path
            mode = os.stat(path).st_mode
            assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
            assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
            answer = await asyncio.to_thread(ask, path, {"get": "nothing"})
            assert "unknown request" in answer["error"]
            return path

    path = asyncio.run(scenario())
    assert not path.exists()


def test_a_host_made_with_status_off_has_no_socket(
    home_dir: Path, host_config: Callable[..., Any]
) -> None:
    async def scenario() -> None:
        off = Host(home_dir, config=host_config(), environment=False, registry=False, status=False)
        by_config = Host(
            home_dir,
            config=host_config(features={"status": False}),
            environment=False,
            registry=False,
        )
        async with off, by_config:
            assert off.control is None and by_config.control is None
            assert sockets(hosts_dir(Home(home_dir).run_dir)) == []

    asyncio.run(scenario())


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_stale_socket_of_a_dead_process_is_ignored_and_removed(
    home_dir: Path, make_host: Callable[..., Host]
) -> None:
    d = hosts_dir(Home(home_dir).ensure().run_dir)
    d.mkdir(mode=0o700, exist_ok=True)
    stale = d / f"{dead_pid()}.1.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()  # the file stays, as after a host that was killed
    assert stale.exists()
    done = run_status(home_dir, "--json")
    assert done.returncode == 1
    assert not stale.exists()

    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()

    async def scenario() -> subprocess.CompletedProcess[str]:
        async with make_host():  # a host starting removes the others' stale sockets too
            assert not stale.exists()
            return await asyncio.to_thread(run_status, home_dir, "--json")

    done = asyncio.run(scenario())
    assert done.returncode == 0
    assert only_host(done.stdout)["pid"] == os.getpid()


def read_until(fd: int, marker: bytes, count: int, timeout: float = 30) -> bytes:
    """Read the pty until ``marker`` occurred ``count`` times."""
    buf = b""
    deadline = time.monotonic() + timeout
    while buf.count(marker) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"only {buf.count(marker)} of {count} {marker!r}: {buf!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError as exc:
                if exc.errno == errno.EIO:
                    break
                raise
            if not chunk:
                break
            buf += chunk
    return buf


def test_watch_redraws_in_place_each_second_until_interrupted(
    home_dir: Path, make_host: Callable[..., Host], write_plugin_source: Callable[..., PluginSource]
) -> None:
    work = write_plugin_source("work", WORK)

    async def scenario() -> tuple[bytes, int]:
        async with make_host(sources=[work]) as host:
            await host.call("work.ok")
            pid, fd = pty.fork()
            if pid == 0:  # the child: mcphost status --watch on the pty
                os.execv(MCPHOST, [MCPHOST, "--home", str(home_dir), "status", "--watch"])
            try:
                # Two whole frames: each ends with its footer line.
                seen = await asyncio.to_thread(read_until, fd, b"Ctrl-C to stop", 2)
                os.kill(pid, signal.SIGINT)
                rest = await asyncio.to_thread(read_until, fd, b"\x00", 1, 15)
                _, status = await asyncio.to_thread(os.waitpid, pid, 0)
                return seen + rest, status
            finally:
                os.close(fd)

    out, status = asyncio.run(scenario())
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, out)
    text = out.decode(errors="replace")
    frames = text.split("\x1b[H\x1b[2J")[1:]
    assert len(frames) >= 2
    for frame in frames[:2]:
        assert f"host pid {os.getpid()}" in frame
        assert any(line.split()[:3] == ["work", "1.0.0", "running"] for line in frame.splitlines())
    assert "Traceback" not in text and "Aborted" not in text


def test_the_control_socket_answers_bad_requests_with_a_reason_and_works_under_a_long_path(
    tmp_path: Path, host_config: Callable[..., Any]
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "home"
    deep.mkdir(parents=True)
    d = hosts_dir(Home(deep).ensure().run_dir)
    d.mkdir(mode=0o755)  # too open: a starting host makes it its owner's alone
    (d / "notes.txt").write_text("not a socket")
    (d / "x.sock").write_text("no pid in the name")

    def talk(path: Path, data: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            fd = os.open(path.parent, os.O_PATH)
            try:
                s.connect(f"/proc/self/fd/{fd}/{path.name}")
            finally:
                os.close(fd)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out

    async def scenario() -> tuple[list[bytes], subprocess.CompletedProcess[str]]:
        host = Host(deep, config=host_config(), environment=False, registry=False)
        async with host:
            assert host.control is not None
            path = host.control.path
            assert len(os.fsencode(path)) > 108
            assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
            answers = [
                await asyncio.to_thread(talk, path, data)
                for data in (b"not json\n", b"[1]\n", b"x" * 10000 + b"\n", b"")
            ]
            # A socket of a live process that does not answer is left out.
            mute = socket.socket(socket.AF_UNIX)
            dfd = os.open(d, os.O_PATH)
            try:
                mute.bind(f"/proc/self/fd/{dfd}/{os.getpid()}.999.sock")
            finally:
                os.close(dfd)
            try:
                done = await asyncio.to_thread(run_status, deep, "--json")
            finally:
                mute.close()
            return answers, done

    answers, done = asyncio.run(scenario())
    assert [json.loads(a)["error"].split(";")[0] for a in answers[:3]] == [
        'a request is one JSON object per line, e.g. {"get": "status"}',
        "unknown request",
        "request too long",
    ]
    assert answers[3] == b""
    assert done.returncode == 0, done.stderr
    assert only_host(done.stdout)["pid"] == os.getpid()


def test_a_host_whose_socket_cannot_be_made_runs_without_it(
    home_dir: Path, make_host: Callable[..., Host], caplog: pytest.LogCaptureFixture
) -> None:
    hosts_dir(Home(home_dir).ensure().run_dir).write_text("a file where the directory goes")

    async def scenario() -> None:
        async with make_host() as host:
            assert host.control is None
            assert host.tools() == []

    asyncio.run(scenario())
    assert "does not answer `mcphost status`" in caplog.text


def test_the_table_names_failures_pending_settings_a_refused_file_and_recent_events() -> None:
    from mcphost.host.cli.status import render

    snap = {
        "pid": 42,
        "argv": ["/usr/bin/mcphost", "serve", "--http", "127.0.0.1:8765"],
        "uptime_seconds": 3723.5,
        "frontend": {"transport": "http", "sessions": 2, "sessions_opened": 5},
        "plugins": [
            {
                "plugin": "bad\x1b[31m",
                "version": "1.0.0",
                "state": "failed",
                "pid": None,
                "restarts": 6,
                "in_flight": 0,
                "calls": 0,
                "calls_per_second": 0.0,
                "p50_ms": None,
                "p99_ms": None,
                "failure": "crashed 6 times within 60 s",
            }
        ],
        "restart_pending": [{"key": "isolation", "running": "auto", "configured": "rlimits"}],
        "config_error": "call_timeout: must be above 0",
        "registry_error": "the registry database is locked",
        "events": [
            {"time": 0, "kind": "crash", "plugin": "bad", "version": "1.0.0", "detail": "exit 3"}
        ],
        "streams": [{"tool": "kit.tail", "items": 3}],
        "queues": [],
    }
    text = render([snap])
    assert "host pid 42  mcphost serve --http 127.0.0.1:8765" in text
    assert "up 1h02m03s  http  clients 2 (5 since start)" in text
    assert "\x1b" not in text
    assert "bad[31m failed: crashed 6 times within 60 s" in text
    assert 'isolation: running "auto", configured "rlimits"' in text
    assert "config.toml refused (running on the last good one): call_timeout" in text
    assert "registry: the registry database is locked" in text
    assert "crash  bad 1.0.0  exit 3" in text
    assert 'streams: {"tool": "kit.tail", "items": 3}' in text
    assert "queues" not in text
    embedded = render([{**snap, "argv": [], "frontend": None, "plugins": []}])
    assert "(embedded)" in embedded and "embedded (no MCP front end)" in embedded
    assert "(no plugins)" in embedded


def http(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_the_status_page_of_a_listener_follows_its_host_and_its_tokens(
    home_dir: Path, make_host: Callable[..., Host], write_plugin_source: Callable[..., PluginSource]
) -> None:
    from mcphost.host.mcp.auth import TokenBook
    from mcphost.host.observe.listener import MetricsListener, PageAuth
    from mcphost.security.tokens import create_token

    work = write_plugin_source("work", WORK)
    tokens = Home(home_dir).ensure().tokens_file
    secret, _ = create_token(tokens, "ops")

    async def scenario() -> None:
        made: list[Host] = []
        open_page = MetricsListener(lambda: made[0] if made else None, "127.0.0.1", 0)
        guarded = MetricsListener(
            lambda: made[0] if made else None,
            "127.0.0.1",
            0,
            auth=PageAuth(lambda: TokenBook(tokens)),
        )
        await open_page.start()
        await guarded.start()
        base = open_page.url.removesuffix("/metrics")
        try:
            code, body = await asyncio.to_thread(http, base + "/status.json")
            assert (code, body) == (503, b"the host is starting; try again in a moment\n")
            async with make_host(sources=[work]) as host:
                made.append(host)
                await host.call("work.ok")
                code, body = await asyncio.to_thread(http, base + "/status.json")
                assert code == 200
                (row,) = json.loads(body)["plugins"]
                assert (row["plugin"], row["calls"]) == ("work", 1)
                code, body = await asyncio.to_thread(http, base + "/")
                assert code == 200 and b"<title>mcphost status</title>" in body
                assert (await asyncio.to_thread(http, base + "/", "HEAD")) == (200, b"")
                assert (await asyncio.to_thread(http, base + "/status.json", "POST"))[0] == 405
                code, body = await asyncio.to_thread(http, base + "/nothing")
                assert code == 404 and b"the status page at /" in body

                gbase = guarded.url.removesuffix("/metrics")
                assert (await asyncio.to_thread(http, gbase + "/status.json"))[0] == 401
                code, body = await asyncio.to_thread(
                    http, gbase + "/status.json", "GET", {"Authorization": f"Bearer {secret}"}
                )
                assert code == 200 and json.loads(body)["pid"] == os.getpid()
                bad_cookie = {"Cookie": "mcphost_page=made-up; other=1"}
                code, _ = await asyncio.to_thread(http, gbase + "/status.json", "GET", bad_cookie)
                assert code == 401
                broken = {"Cookie": 'mcphost_page="unterminated'}
                code, _ = await asyncio.to_thread(http, gbase + "/status.json", "GET", broken)
                assert code == 401
        finally:
            await open_page.close()
            await guarded.close()

    asyncio.run(scenario())
