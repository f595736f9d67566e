"""The framed channel over a real socketpair: reads split anywhere, frames of any size,
frames sent together leaving in few writes, and sends from other threads."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import pytest
from support.waiting import wait_until

from mcphost.sandbox.channel import READ_SIZE, WRITE_BATCH, Channel, open_channel
from mcphost.sandbox.protocol import HEADER, Call, Frame, FrameCodec, Ping, Pong, Result
from mcphost.sdk import ProtocolError


class Peer:
    """The far end of a socketpair, read and written with blocking calls."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.codec = FrameCodec()
        self.reader = sock.makefile("rb")

    def read_frames(self, n: int) -> list[Frame]:
        out = []
        for _ in range(n):
            head = self.reader.read(HEADER.size)
            out.append(self.codec.decode(self.reader.read(self.codec.body_length(head))))
        return out


async def channel_pair(
    received: list[Frame], max_frame: int = 16 * 1024 * 1024
) -> tuple[Channel, Peer, asyncio.Future[BaseException | None]]:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    closed: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def on_close(exc: BaseException | None) -> None:
        if not closed.done():
            closed.set_result(exc)

    ch = await open_channel(mine, FrameCodec(max_frame), received.append, on_close)
    return ch, Peer(theirs), closed


class CountingTransport:
    """Stands in front of a channel's transport (asyncio's or uvloop's, whose methods
    cannot be replaced) and notes the size of every write."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.sizes: list[int] = []

    def write(self, data: Any) -> None:
        self.sizes.append(len(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def count_writes(ch: Channel) -> list[int]:
    """The sizes of the channel's writes from now on."""
    counting = CountingTransport(ch._transport)
    ch._transport = counting  # type: ignore[assignment]
    return counting.sizes


def test_frames_split_at_any_byte_arrive_whole_and_in_order() -> None:
    frames: list[Frame] = [Call(id=i, tool="echo", args={"text": "x" * i}) for i in range(40)]
    wire = b"".join(FrameCodec().encode(f) for f in frames)

    async def scenario() -> list[Frame]:
        got: list[Frame] = []
        ch, peer, _ = await channel_pair(got)
        # Odd-sized pieces, each sent on its own: frames and headers are cut everywhere.
        pos, step = 0, 1
        while pos < len(wire):
            peer.sock.sendall(wire[pos : pos + step])
            pos += step
            step = step % 7 + 1
            await asyncio.sleep(0)
        await wait_until(lambda: len(got) == len(frames), 5.0, "every frame arrived")
        ch.close()
        return got

    assert asyncio.run(scenario()) == frames


def test_a_frame_larger_than_the_read_buffer_is_read_whole() -> None:
    big = Result(id=7, value="y" * (3 * READ_SIZE))

    async def scenario() -> tuple[list[Frame], int]:
        got: list[Frame] = []
        ch, peer, _ = await channel_pair(got)
        wire = FrameCodec().encode(big) + FrameCodec().encode(Pong(n=1))
        await asyncio.get_running_loop().run_in_executor(None, peer.sock.sendall, wire)
        await wait_until(lambda: len(got) == 2, 5.0, "both frames arrived")
        size = len(ch._buf)
        ch.close()
        return got, size

    got, size = asyncio.run(scenario())
    assert got == [big, Pong(n=1)]
    assert size == READ_SIZE  # back to its usual size once the big frame was read


def test_a_frame_announced_over_the_limit_ends_the_channel_with_a_protocol_error() -> None:
    async def scenario() -> BaseException | None:
        got: list[Frame] = []
        _, peer, closed = await channel_pair(got, max_frame=1000)
        peer.sock.sendall(HEADER.pack(1001) + b"\0" * 10)
        return await asyncio.wait_for(closed, 5)

    exc = asyncio.run(scenario())
    assert isinstance(exc, ProtocolError) and "over the limit of 1000" in exc.message


def test_sending_a_frame_over_the_limit_fails_and_sends_nothing() -> None:
    async def scenario() -> list[Frame]:
        ch, peer, _ = await channel_pair([], max_frame=100)
        with pytest.raises(ProtocolError, match="over the limit of 100 bytes"):
            ch.send(Result(id=1, value="z" * 200))
        ch.send(Pong(n=2))
        return peer.read_frames(1)

    assert asyncio.run(scenario()) == [Pong(n=2)]


def test_frames_sent_while_a_read_is_handled_leave_together_after_it() -> None:
    async def scenario() -> tuple[list[Frame], list[int], int]:
        answered: list[Frame] = []
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        reads = 0  # reads that brought whole frames (the kernel may split the bytes)

        def on_frame(frame: Frame) -> None:
            assert isinstance(frame, Ping)
            ch.send(Pong(n=frame.n))
            answered.append(frame)

        class CountingChannel(Channel):
            # A subclass, not a patched instance: uvloop calls the class's method.
            def buffer_updated(self, nbytes: int) -> None:
                nonlocal reads
                before = len(answered)
                super().buffer_updated(nbytes)
                reads += len(answered) > before

        loop = asyncio.get_running_loop()
        _, ch = await loop.create_unix_connection(
            lambda: CountingChannel(FrameCodec(), on_frame, lambda exc: None, mine), sock=mine
        )
        writes = count_writes(ch)
        n = WRITE_BATCH - 1
        theirs.sendall(b"".join(FrameCodec().encode(Ping(n=i)) for i in range(n)))
        await wait_until(lambda: len(answered) == n, 20, "every call answered")
        got = Peer(theirs).read_frames(n)
        ch.close()
        return got, writes, reads

    got, writes, reads = asyncio.run(scenario())
    assert got == [Pong(n=i) for i in range(WRITE_BATCH - 1)]
    # One write per read, however many answers the read's frames asked for.
    assert 1 <= reads < WRITE_BATCH - 1
    assert len(writes) == reads


def test_frames_that_may_wait_leave_together_on_the_next_turn_of_the_loop() -> None:
    async def scenario() -> tuple[list[Frame], list[int]]:
        ch, peer, _ = await channel_pair([])
        sizes = count_writes(ch)
        for i in range(5):
            ch.send(Pong(n=i), flush=False)
        assert sizes == []  # nothing left yet
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        ch.send(Pong(n=99))  # a frame that may not wait leaves at once
        got = peer.read_frames(6)
        ch.close()
        return got, sizes

    got, sizes = asyncio.run(scenario())
    assert got == [Pong(n=i) for i in range(5)] + [Pong(n=99)]
    assert len(sizes) == 2


def test_frames_sent_from_many_threads_arrive_whole_each_thread_in_order() -> None:
    per_thread = 2000

    async def scenario() -> list[Frame]:
        ch, peer, _ = await channel_pair([])

        def sender(t: int) -> None:
            for i in range(per_thread):
                ch.send_threadsafe(Result(id=t * per_thread + i, value="v" * (i % 50)))

        async def loop_sender() -> None:
            for i in range(per_thread):
                ch.send(Pong(n=i), flush=i % 3 == 0)
                if i % 100 == 0:
                    await asyncio.sleep(0)

        reading = asyncio.get_running_loop().run_in_executor(None, peer.read_frames, 4 * per_thread)
        threads = [threading.Thread(target=sender, args=(t,)) for t in range(3)]
        for th in threads:
            th.start()
        await loop_sender()

        def join() -> None:
            for th in threads:
                th.join()

        await asyncio.get_running_loop().run_in_executor(None, join)
        got = await asyncio.wait_for(reading, 20)
        ch.close()
        return got

    got = asyncio.run(scenario())
    assert [f.n for f in got if isinstance(f, Pong)] == list(range(per_thread))
    for t in range(3):
        ids = [f.id for f in got if isinstance(f, Result) and f.id // per_thread == t]
        assert ids == list(range(t * per_thread, (t + 1) * per_thread))


def test_frames_of_megabytes_cross_whole_both_ways_without_growing_the_read_buffer() -> None:
    big_in = Result(id=1, value="i" * (5 * 1024 * 1024))
    big_out = Result(id=2, value="o" * (5 * 1024 * 1024))

    async def scenario() -> tuple[list[Frame], list[Frame], list[int], list[int]]:
        got: list[Frame] = []
        ch, peer, _ = await channel_pair(got)
        body_buffers: list[int] = []  # the sizes of the buffers a large body went into
        begin_big = ch._begin_big

        def watching_begin_big(length: int, start: int, end: int) -> None:
            begin_big(length, start, end)
            assert ch._big is not None
            body_buffers.append(len(ch._big))

        ch._begin_big = watching_begin_big  # type: ignore[method-assign]
        sizes = count_writes(ch)
        loop = asyncio.get_running_loop()
        wire = b"".join(FrameCodec().encode(f) for f in (Pong(n=1), big_in, Pong(n=2)))
        sending = loop.run_in_executor(None, peer.sock.sendall, wire)
        reading = loop.run_in_executor(None, peer.read_frames, 2)
        ch.send(big_out)
        ch.send(Pong(n=3))
        await asyncio.wait_for(sending, 20)
        sent = await asyncio.wait_for(reading, 20)
        await wait_until(lambda: len(got) == 3, 20, "three frames arrived")
        assert len(ch._buf) == READ_SIZE
        ch.close()
        return got, sent, body_buffers, sizes

    got, sent, body_buffers, sizes = asyncio.run(scenario())
    assert got == [Pong(n=1), big_in, Pong(n=2)]
    assert sent == [big_out, Pong(n=3)]
    # The body went into one buffer of exactly its size, never the channel's read buffer.
    assert body_buffers == [len(FrameCodec().encode(big_in)) - HEADER.size]
    assert sizes[0] == len(FrameCodec().encode(big_out))  # handed over at once, whole


def test_large_frames_read_in_many_pieces_arrive_whole_through_one_kept_buffer() -> None:
    frames: list[Frame] = [
        Result(id=1, value="a" * (3 * READ_SIZE)),
        Pong(n=1),
        Result(id=2, value="".join(chr(65 + i % 26) for i in range(2 * READ_SIZE))),
        Result(id=3, value="c" * (READ_SIZE + 10)),
    ]

    async def scenario() -> tuple[list[Frame], list[object]]:
        got: list[Frame] = []
        ch, peer, _ = await channel_pair(got)
        buffers: list[object] = []  # the buffers the large bodies went into
        begin_big = ch._begin_big

        def watching_begin_big(length: int, start: int, end: int) -> None:
            begin_big(length, start, end)
            assert ch._big is not None
            buffers.append(ch._big.obj)

        ch._begin_big = watching_begin_big  # type: ignore[method-assign]
        wire = b"".join(FrameCodec().encode(f) for f in frames)
        pos, step = 0, 1000
        while pos < len(wire):  # pieces of every size, the loop turning between them
            peer.sock.sendall(wire[pos : pos + step])
            pos += step
            step = step * 3 % 65_521 + 1
            await asyncio.sleep(0)
        await wait_until(lambda: len(got) == len(frames), 10.0, "every frame arrived")
        ch.close()
        return got, buffers

    got, buffers = asyncio.run(scenario())
    assert got == frames
    assert len(buffers) == 3
    assert all(b is buffers[0] for b in buffers)  # the first large body's took the others


def test_a_large_frame_sent_after_another_is_encoded_into_its_buffer() -> None:
    first = Result(id=1, value="a" * (2 * 1024 * 1024))
    second = Result(id=2, value="b" * (2 * 1024 * 1024))

    async def scenario() -> tuple[list[Frame], bool]:
        ch, peer, _ = await channel_pair([])
        loop = asyncio.get_running_loop()
        ch.send(first)
        sent = await loop.run_in_executor(None, peer.read_frames, 1)
        await wait_until(lambda: not ch._transport.get_write_buffer_size(), 5.0, "written")
        kept = ch._out.data
        ch.send(second)
        sent += await loop.run_in_executor(None, peer.read_frames, 1)
        same = ch._out.data is kept
        ch.close()
        return sent, same

    sent, same = asyncio.run(scenario())
    assert sent == [first, second]
    assert same  # the transport was done with the first: its memory took the second
