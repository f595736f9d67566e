"""The host side of a worker against peers that misbehave, and against a host that dies.

Fake workers are tiny Python scripts spawned in place of the real worker: they speak
just enough of the protocol to reach the point where they break it.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from support.procs import assert_process_gone, wait_process_gone

from mcphost.sandbox import (
    IsolationBackend,
    IsolationReport,
    LaunchPlan,
    RlimitBackend,
    WorkerSpec,
    spawn_worker,
)
from mcphost.sandbox.isolation import clean_env
from mcphost.sdk import MCPHostError, WorkerCrashed

#: The write_plugin fixture (tests/sandbox/conftest.py).
PluginWriter = Callable[..., WorkerSpec]

FAKE_WORKER = r"""
import socket
import struct
import sys
import time
from collections.abc import Callable

import msgspec

from mcphost.sandbox.protocol import Call, Error, FrameCodec, Hello, Items, Result, StreamItem
from mcphost.sdk.schema import ToolSpec

fd, mode = int(sys.argv[1]), sys.argv[2]
sock = socket.socket(fileno=fd)
codec = FrameCodec()


def read_frame():
    header = b""
    while len(header) < 4:
        chunk = sock.recv(4 - len(header))
        if not chunk:
            sys.exit(0)
        header += chunk
    n = codec.body_length(header)
    body = b""
    while len(body) < n:
        body += sock.recv(n - len(body))
    return codec.decode(body)


def hello(versions=(1,), plugin="fake"):
    tools = [ToolSpec(name="answer"), ToolSpec(name="items", kind="stream")]
    sock.sendall(codec.encode(Hello(versions=list(versions), plugin=plugin,
                                    plugin_version="1.0.0", tools=tools)))
    read_frame()  # Welcome


def wait_for_call():
    while True:
        frame = read_frame()
        if isinstance(frame, Call):
            return frame


if mode == "garbage":
    sock.sendall(struct.pack(">I", 12) + b"\xc1not msgpack")
elif mode == "huge":
    sock.sendall(struct.pack(">I", 1 << 31))
elif mode == "silent":
    pass
elif mode == "wrong-version":
    tools = [ToolSpec(name="answer")]
    sock.sendall(codec.encode(Hello(versions=[99], plugin="fake", plugin_version="9",
                                    tools=tools)))
elif mode == "impostor":
    hello(plugin="somebody-else")
elif mode == "garbage-after-call":
    hello()
    wait_for_call()
    sock.sendall(struct.pack(">I", 5) + b"\x92\xa1t\xa1?")
elif mode == "huge-after-call":
    hello()
    wait_for_call()
    sock.sendall(struct.pack(">I", 64 * 1024 * 1024))
elif mode == "host-frame":
    hello()
    call = wait_for_call()
    sock.sendall(codec.encode(Call(id=call.id, tool="x", args={})))
elif mode == "flood-stream":
    hello()
    call = wait_for_call()
    for seq in range(call.window + 5):
        sock.sendall(codec.encode(StreamItem(id=call.id, seq=seq, value=seq)))
elif mode == "items-past-bytes":  # a byte window of 1024: the third item passes it
    hello(versions=(4,))
    call = wait_for_call()
    pad = msgspec.Raw(msgspec.msgpack.encode("x" * 600))
    sock.sendall(codec.encode(Items(id=call.id, seq=0, values=[pad, pad])))
    sock.sendall(codec.encode(Items(id=call.id, seq=2, values=[pad])))
elif mode in ("flood-items", "skip-items"):
    hello(versions=(4,))
    call = wait_for_call()

    def items(seq, values):
        raws = [msgspec.Raw(msgspec.msgpack.encode(v)) for v in values]
        sock.sendall(codec.encode(Items(id=call.id, seq=seq, values=raws)))

    if mode == "flood-items":  # in frames of 3: the second one passes the credit
        for seq in range(0, call.window + 5, 3):
            items(seq, list(range(seq, seq + 3)))
    else:  # items 2 to 4 never come
        items(0, [0, 1])
        items(5, [5, 6])
elif mode == "exit-during-call":
    hello()
    wait_for_call()
    sys.exit(7)
elif mode == "answer":
    hello()
    while True:
        call = wait_for_call()
        sock.sendall(codec.encode(Result(id=call.id, value=42)))
# Stay alive: whatever happens next is the host's doing.
while sock.recv(65536):
    pass
time.sleep(60)
"""


class FakeWorkerBackend(IsolationBackend):
    """Spawns the fake worker script in a given mode instead of the real worker."""

    name = "fake"
    level = "rlimits"

    def __init__(self, script: Path, mode: str) -> None:
        self.script = script
        self.mode = mode

    def available(self) -> tuple[bool, str]:
        return True, "a test double of a worker"

    def report(self) -> IsolationReport:
        return IsolationReport(backend=self.name, level=self.level, available=True)

    def prepare(self, spec: WorkerSpec, channel_fd: int) -> LaunchPlan:
        return LaunchPlan(
            argv=[sys.executable, str(self.script), str(channel_fd), self.mode],
            env=clean_env(),
            cwd=spec.work_dir,
            pass_fds=(channel_fd,),
        )


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Path, WorkerSpec]:
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    spec = WorkerSpec(
        plugin="fake",
        version="1.0.0",
        entry="fake:plugin",
        paths=[],
        data_dir=str(tmp_path / "data"),
        work_dir=str(tmp_path / "run-fake"),
    )
    return script, spec


GOOD = """
from mcphost.sdk import Plugin

plugin = Plugin("good")


@plugin.tool
def echo(text: str) -> str:
    return text
"""


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("garbage", "broke the wire protocol: malformed frame"),
        ("huge", "announced a frame of 2147483648 bytes, over the limit"),
        ("wrong-version", "protocol version mismatch: the worker speaks [99]"),
        ("impostor", "says it is plugin 'somebody-else'"),
    ],
)
async def test_a_worker_that_breaks_the_handshake_is_ended_with_a_clear_error(
    fake: tuple[Path, WorkerSpec], mode: str, expected: str, no_leftover_workers: None
) -> None:
    script, spec = fake

    with pytest.raises(MCPHostError) as info:
        await spawn_worker(spec, FakeWorkerBackend(script, mode), handshake_timeout=10)
    assert expected in info.value.message
    assert "fake" in info.value.message


async def test_a_worker_that_never_says_hello_is_killed_after_the_handshake_timeout(
    fake: tuple[Path, WorkerSpec], no_leftover_workers: None
) -> None:
    script, spec = fake

    t0 = time.perf_counter()
    with pytest.raises(WorkerCrashed) as info:
        await spawn_worker(spec, FakeWorkerBackend(script, "silent"), handshake_timeout=0.5)
    assert time.perf_counter() - t0 < 3.0
    assert "did not say Hello within 0.5s" in info.value.message


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("garbage-after-call", "broke the wire protocol: malformed frame"),
        ("huge-after-call", "broke the wire protocol: peer announced a frame of 67108864"),
        ("host-frame", "broke the wire protocol: it sent a Call frame, which only a host sends"),
        ("exit-during-call", "exited with status 7"),
    ],
)
async def test_a_worker_that_breaks_the_protocol_mid_call_is_ended_and_others_keep_serving(
    fake: tuple[Path, WorkerSpec],
    write_plugin: PluginWriter,
    backend: RlimitBackend,
    mode: str,
    expected: str,
    no_leftover_workers: None,
) -> None:
    script, spec = fake
    good_spec = write_plugin("good", GOOD)

    good = await spawn_worker(good_spec, backend)
    bad = await spawn_worker(spec, FakeWorkerBackend(script, mode))
    try:
        with pytest.raises(WorkerCrashed) as info:
            await asyncio.wait_for(bad.call("answer", {}), 10)
        assert expected in info.value.message
        assert info.value.data["plugin"] == "fake"
        reason = await asyncio.wait_for(bad.closed, 5)
        assert expected in reason
        await wait_process_gone(bad.pid, 5)
        # The other worker, on the same host loop, never noticed.
        assert await good.call("echo", {"text": "fine"}) == "fine"
    finally:
        await good.close()
        await bad.close()


async def test_a_worker_sending_stream_items_beyond_its_credit_is_ended(
    fake: tuple[Path, WorkerSpec], no_leftover_workers: None
) -> None:
    script, spec = fake

    bad = await spawn_worker(spec, FakeWorkerBackend(script, "flood-stream"))
    stream = bad.stream("items", {}, window=4)
    got = [await stream.__anext__()]
    # The consumer holds on to its first item, so it has granted no more credit:
    # the fifth unacknowledged item is a protocol violation.
    reason = await asyncio.wait_for(asyncio.shield(bad.closed), 5)
    assert "broke the wire protocol" in reason and "with only 4 credits" in reason
    with pytest.raises(WorkerCrashed) as info:
        async for item in stream:
            got.append(item)
    assert "with only 4 credits" in info.value.message
    assert got == [0, 1, 2, 3]
    await bad.close()


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("flood-items", "sent item 6 of stream"),
        ("skip-items", "sent items from 5 of stream"),
    ],
)
async def test_a_worker_sending_items_frames_beyond_credit_or_out_of_order_is_ended(
    fake: tuple[Path, WorkerSpec], no_leftover_workers: None, mode: str, reason: str
) -> None:
    script, spec = fake

    bad = await spawn_worker(spec, FakeWorkerBackend(script, mode))
    assert bad.version == 4
    stream = bad.stream("items", {}, window=4)
    got = [await stream.__anext__()]
    closed = await asyncio.wait_for(asyncio.shield(bad.closed), 5)
    assert "broke the wire protocol" in closed and reason in closed
    with pytest.raises(WorkerCrashed):
        async for item in stream:
            got.append(item)
    # What came in order and within credit was delivered, nothing after it.
    assert got == ([0, 1, 2] if mode == "flood-items" else [0, 1])
    await bad.close()


async def test_a_worker_sending_items_frames_past_their_byte_credit_is_ended(
    fake: tuple[Path, WorkerSpec], no_leftover_workers: None
) -> None:
    from mcphost.host.flow.watermarks import Watermarks

    script, spec = fake
    bad = await spawn_worker(spec, FakeWorkerBackend(script, "items-past-bytes"))
    # Paused from the first item on: the host credits nothing while the consumer holds.
    gate = Watermarks(1, 0)
    stream = bad.gated_stream("items", {}, gate, window=8, window_bytes=1024)
    got = [await anext(stream)]
    closed = await asyncio.wait_for(asyncio.shield(bad.closed), 5)
    assert "broke the wire protocol" in closed
    assert "past its byte credit of 1024 bytes" in closed
    with pytest.raises(WorkerCrashed):
        async for item in stream:
            got.append(item)
    # The first frame's two items were within credit (each began below 1024 bytes).
    assert got == ["x" * 600] * 2
    await bad.close()


async def test_a_well_behaved_fake_worker_is_served_like_a_real_one(
    fake: tuple[Path, WorkerSpec], no_leftover_workers: None
) -> None:
    # The control for the cases above: the fake itself is not what fails them.
    script, spec = fake

    w = await spawn_worker(spec, FakeWorkerBackend(script, "answer"))
    try:
        assert await asyncio.gather(*(w.call("answer", {}) for _ in range(5))) == [42] * 5
    finally:
        await w.close()


async def test_calls_on_a_closed_worker_fail_at_once_naming_the_worker(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("good", GOOD)

    w = await spawn_worker(spec, backend)
    await w.close()
    with pytest.raises(WorkerCrashed) as info:
        await w.call("echo", {"text": "x"})
    assert "good 1.0.0" in info.value.message and "not running" in info.value.message


HOST_SCRIPT = """
import asyncio, json, sys
from mcphost.host import Host, HostConfig


async def main() -> None:
    home, plugins, isolation = sys.argv[1], sys.argv[2], sys.argv[3]
    config = HostConfig(allow_unsigned=True, isolation=isolation)
    async with Host(home, config=config, plugin_dirs=[plugins], environment=False,
                    registry=False) as host:
        assert await host.call("textkit.upper", {"text": "x"}) == "X"
        stream = host.stream("textkit.count_to", {"n": 1000, "delay": 0.01})
        await stream.__anext__()
        print(json.dumps([s["pid"] for s in host.stats()]), flush=True)
        await asyncio.Event().wait()


asyncio.run(main())
"""


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["rlimits", "auto"])
def test_killing_the_host_leaves_no_orphan_worker(
    tmp_path: Path, plugin_dirs: dict[str, Path], isolation: str
) -> None:
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent(HOST_SCRIPT))
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(tmp_path / "home"),
            str(plugin_dirs["textkit"]),
            isolation,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the host did not start its worker within 30s"
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        pids = json.loads(line)
        assert len(pids) == 1 and pids[0]
        worker = psutil.Process(pids[0])
        # Everything the worker started too (a jail's sandboxed child, if any).
        tree = [worker, *worker.children(recursive=True)]
        assert worker.is_running()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    for p in tree:  # workers must not outlive their SIGKILLed host (this process,
        assert_process_gone(p, 10, reap=True)  # a subreaper, adopted them)
