"""Buffers kept between frames of megabytes: frames stay intact whatever comes between
them, a large frame's memory serves the next one, a view a transport still holds is
never written into, and an idle buffer is let go."""

from __future__ import annotations

import pytest

from mcphost.sandbox import buffers
from mcphost.sandbox.buffers import LARGE, BodyBuffer, OutBuffer
from mcphost.sandbox.protocol import Frame, FrameCodec, ItemBatch, Items, Ping, Pong, Result

MB = 1024 * 1024


def sent(out: OutBuffer) -> list[Frame]:
    """What a peer reads from the frames ``out`` holds, which are then written."""
    with out.view() as view:
        frames, rest = FrameCodec().decode_stream(bytes(view))
    assert rest == b""
    out.clear()
    return frames


def test_frames_large_and_small_in_any_order_leave_intact() -> None:
    codec = FrameCodec()
    out = OutBuffer()
    rounds: list[list[Frame]] = [
        [Pong(n=1)],
        [Result(id=1, value="a" * (3 * MB)), Pong(n=2)],
        [Pong(n=3), Ping(n=4)],
        [Result(id=2, value="b" * MB), Result(id=3, value="c" * 10)],
        [Result(id=4, value="d" * (5 * MB))],
        [Pong(n=5)],
    ]
    for frames in rounds:
        for frame in frames:
            codec.encode_out(frame, out)
        assert sent(out) == frames


def test_a_large_frame_is_encoded_into_the_memory_of_the_one_before() -> None:
    codec = FrameCodec()
    out = OutBuffer()
    codec.encode_out(Result(id=1, value="a" * (4 * MB)), out)
    sent(out)
    kept, size = out.data, out.data.__alloc__()
    # Small frames in between (a ping's answer) do not make it let go.
    codec.encode_out(Pong(n=1), out)
    codec.encode_out(Pong(n=2), out)
    assert sent(out) == [Pong(n=1), Pong(n=2)]
    big = Result(id=2, value="b" * (3 * MB))
    codec.encode_out(big, out)
    assert out.data is kept and out.data.__alloc__() == size  # no new memory
    assert sent(out) == [big]


def test_a_frame_over_the_limit_leaves_the_frames_before_it_as_they_were() -> None:
    codec = FrameCodec(max_frame=2 * MB)
    out = OutBuffer()
    codec.encode_out(Result(id=1, value="a" * MB), out)
    sent(out)
    codec.encode_out(Pong(n=1), out)
    with pytest.raises(Exception, match="over the limit"):
        codec.encode_out(Result(id=2, value="b" * (3 * MB)), out)
    codec.encode_out(Pong(n=2), out)
    assert sent(out) == [Pong(n=1), Pong(n=2)]


def test_a_buffer_a_transport_still_holds_is_never_written_into() -> None:
    codec = FrameCodec()
    out = OutBuffer()
    first = Result(id=1, value="a" * (2 * MB))
    codec.encode_out(first, out)
    sent(out)  # now a kept buffer
    codec.encode_out(first, out)
    held = out.lend()  # a transport writes from it, for a while
    second = Result(id=2, value="b" * (2 * MB))
    codec.encode_out(second, out)
    assert codec.decode_stream(bytes(held))[0] == [first]  # untouched
    held.release()
    assert sent(out) == [second]


def test_a_partial_write_leaves_the_rest_in_order() -> None:
    codec = FrameCodec()
    out = OutBuffer()
    codec.encode_out(Result(id=1, value="a" * (2 * MB)), out)
    sent(out)
    frames: list[Frame] = [Pong(n=1), Result(id=2, value="b" * 1000), Pong(n=3)]
    for frame in frames:
        codec.encode_out(frame, out)
    with out.view() as view:
        wire = bytes(view)
    out.consume(7)
    with out.view() as view:
        assert bytes(view) == wire[7:]
    assert codec.decode_stream(wire)[0] == frames


def test_items_of_a_stream_batch_into_an_out_buffer() -> None:
    codec = FrameCodec()
    out = OutBuffer()
    batch = ItemBatch(codec)
    for seq in range(3):
        batch.add(9, seq, "x" * seq)
    batch.encode_into(codec, out)
    (frame,) = sent(out)
    assert isinstance(frame, Items) and (frame.id, frame.seq) == (9, 0)
    assert [codec.decode_value(v) for v in frame.values] == ["", "x", "xx"]


def test_buffers_no_large_frame_used_for_a_while_are_let_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(buffers, "RETAIN", -1.0)  # "a while" has always passed
    codec = FrameCodec()
    out = OutBuffer()
    codec.encode_out(Result(id=1, value="a" * (2 * MB)), out)
    sent(out)
    assert out.data.__alloc__() < LARGE
    body = BodyBuffer()
    body.view(2 * MB)[:3] = b"abc"
    assert body.held
    body.trim()
    assert not body.held


def test_a_large_body_is_read_into_the_memory_of_the_one_before() -> None:
    body = BodyBuffer()
    first = body.view(3 * MB)
    first[-3:] = b"end"
    kept = first.obj
    first.release()
    second = body.view(2 * MB)
    assert second.obj is kept and len(second) == 2 * MB
    body.trim()  # used just now: kept
    assert body.held
    larger = body.view(8 * MB)  # too large for it: a new one
    assert larger.obj is not kept and len(larger) == 8 * MB


def test_without_ctypes_nothing_is_kept_and_frames_still_leave_intact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(buffers, "_resize", None)
    monkeypatch.setattr(buffers, "_no_resize", True)  # as if ctypes failed to import
    codec = FrameCodec()
    out = OutBuffer()
    frames: list[Frame] = [Result(id=1, value="a" * (2 * MB)), Pong(n=1)]
    for frame in frames:
        codec.encode_out(frame, out)
    assert sent(out) == frames
    assert not out.kept and out.data.__alloc__() < LARGE
