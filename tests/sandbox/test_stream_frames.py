"""The frames a real worker streams in, by the protocol version its host chose: one
``item`` frame per item for a version-3 host, ``items`` frames carrying several from
version 4; either way in order, each item once, within the credit in items and bytes."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from mcphost.sandbox import RlimitBackend, WorkerSpec
from mcphost.sandbox.protocol import (
    Call,
    Credit,
    Error,
    FrameCodec,
    Hello,
    Items,
    Shutdown,
    StreamEnd,
    StreamItem,
    Welcome,
    item_size,
)

PluginWriter = Callable[..., WorkerSpec]

GEN = '''
import asyncio
from collections.abc import AsyncIterator, Iterator

from mcphost.sdk import Plugin

plugin = Plugin("gen")


@plugin.tool
def count(n: int, size: int = 0) -> Iterator[dict]:
    """n items from a sync generator."""
    for i in range(n):
        yield {"i": i, "pad": "x" * size}


@plugin.tool
async def acount(n: int, size: int = 0) -> AsyncIterator[dict]:
    """n items from an async generator, which now and then waits."""
    for i in range(n):
        if i % 50 == 0:
            await asyncio.sleep(0)
        yield {"i": i, "pad": "x" * size}
'''


class RawHost:
    """The host's end of a real worker's channel, driven frame by frame."""

    def __init__(self, sock: socket.socket, max_frame: int) -> None:
        self.sock = sock
        self.rf = sock.makefile("rb")
        self.codec = FrameCodec(max_frame)
        self.last_size = 0  # the body length of the frame read last

    def recv(self) -> Any:
        head = self.rf.read(4)
        assert len(head) == 4, "the worker closed its channel"
        self.last_size = self.codec.body_length(head)
        return self.codec.decode(self.rf.read(self.last_size))

    def send(self, frame: Any) -> None:
        self.sock.sendall(self.codec.encode(frame))


@contextmanager
def worker(spec: WorkerSpec, version: int) -> Iterator[RawHost]:
    """A worker for ``spec`` whose host chose protocol ``version``."""
    os.makedirs(spec.work_dir, exist_ok=True)
    os.makedirs(spec.data_dir, exist_ok=True)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    plan = RlimitBackend().prepare(spec, theirs.fileno())
    proc = subprocess.Popen(
        plan.argv,
        env=plan.env,
        cwd=plan.cwd,
        pass_fds=plan.pass_fds,
        preexec_fn=plan.preexec_fn,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    theirs.close()
    host = RawHost(mine, spec.max_frame)
    try:
        hello = host.recv()
        assert isinstance(hello, Hello) and 4 in hello.versions and 3 in hello.versions
        host.send(Welcome(version=version, max_frame=spec.max_frame))
        yield host
        host.send(Shutdown(reason="test over"))
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        mine.close()


def stream(
    host: RawHost, tool: str, n: int, *, size: int = 0, window: int, window_bytes: int
) -> tuple[list[Any], list[Any]]:
    """Stream ``n`` items, crediting each item once it is read, and check the worker
    kept within its credit all along; returns the items and the stream's frames."""
    host.send(
        Call(
            id=1,
            tool=tool,
            args={"n": n, "size": size},
            stream=True,
            window=window,
            window_bytes=window_bytes,
            timeout=60.0,
        )
    )
    items: list[Any] = []
    frames: list[Any] = []
    granted, granted_bytes, got_bytes = window, window_bytes, 0
    while True:
        frame = host.recv()
        if isinstance(frame, StreamEnd):
            assert frame.count == len(items)
            return items, frames
        assert isinstance(frame, StreamItem | Items), frame
        frames.append(frame)
        if isinstance(frame, StreamItem):
            assert frame.seq == len(items)
            # Protocol 3: an item's bytes are its frame's body.
            values, sizes = [frame.value], [host.last_size]
        else:
            assert frame.seq == len(items) and frame.values
            values = [host.codec.decode_value(raw) for raw in frame.values]
            sizes = [item_size(raw) for raw in frame.values]
        for value, size in zip(values, sizes, strict=True):
            # Each item was sent with credit left, in items and in bytes.
            assert len(items) < granted
            assert got_bytes < granted_bytes
            items.append(value)
            got_bytes += size
        # Credit for what was read, as a host whose consumer keeps up.
        host.send(Credit(id=1, n=len(values), bytes=sum(sizes)))
        granted += len(values)
        granted_bytes += sum(sizes)


@pytest.mark.parametrize("tool", ["count", "acount"])
def test_a_version_3_host_gets_one_item_frame_per_item(
    write_plugin: PluginWriter, tool: str
) -> None:
    spec = write_plugin("gen", GEN)
    with worker(spec, 3) as host:
        items, frames = stream(host, tool, 300, window=64, window_bytes=1 << 20)
    assert [item["i"] for item in items] == list(range(300))
    assert all(isinstance(f, StreamItem) for f in frames)
    assert len(frames) == 300


@pytest.mark.parametrize("tool", ["count", "acount"])
def test_a_version_4_host_gets_several_items_per_frame_in_order_within_credit(
    write_plugin: PluginWriter, tool: str
) -> None:
    spec = write_plugin("gen", GEN)
    with worker(spec, 4) as host:
        items, frames = stream(host, tool, 2000, window=64, window_bytes=1 << 20)
        # Byte credit binds too: items of ~500 bytes against a window of 4 KiB.
        big, big_frames = stream(host, tool, 300, size=500, window=64, window_bytes=4096)
    assert [item["i"] for item in items] == list(range(2000))
    assert all(isinstance(f, Items) for f in frames)
    assert len(frames) < 2000 // 4  # items share frames
    assert max(len(f.values) for f in frames) <= 64
    assert [item["i"] for item in big] == list(range(300))
    assert all(isinstance(f, Items) and len(f.values) <= 9 for f in big_frames)


@pytest.mark.parametrize("tool", ["count", "acount"])
def test_a_stream_item_too_large_for_any_frame_fails_the_call(
    write_plugin: PluginWriter, tool: str
) -> None:
    spec = write_plugin("gen", GEN, max_frame=4096)
    with worker(spec, 4) as host:
        host.send(
            Call(
                id=1,
                tool=tool,
                args={"n": 3, "size": 8000},
                stream=True,
                window=8,
                timeout=60.0,
            )
        )
        frame = host.recv()
    assert isinstance(frame, Error) and frame.code == "protocol_error"
    assert "over the frame limit of 4096 bytes" in frame.message
