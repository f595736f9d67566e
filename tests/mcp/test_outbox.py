"""The outbox toward one client: bounded in bytes, answers wait, notifications coalesce
or drop with a count, and nothing waits for ever once the client is gone."""

from __future__ import annotations

import asyncio

import pytest

from mcphost.host.mcp.outbox import Outbox


def notice(n: int) -> bytes:
    return f"dropped {n}".encode()


async def drain(box: Outbox) -> list[bytes]:
    out = []
    while (frame := box.get_nowait()) is not None:
        out.append(frame)
    return out


def test_log_lines_past_the_limit_are_dropped_and_counted_in_one_notice() -> None:
    async def scenario() -> list[bytes]:
        box = Outbox(100, dropped_notice=notice)
        for i in range(50):
            box.notify(b"line %02d " % i + b"x" * 10)  # 18 bytes each
        assert box.size <= 100
        assert box.dropped == 50 - 5
        return await drain(box)

    frames = asyncio.run(scenario())
    assert [f[:7] for f in frames[:5]] == [b"line %02d" % i for i in range(5)]
    assert frames[5:] == [b"dropped 45"]  # in the place of the first line lost


def test_progress_reaches_a_client_that_keeps_up_step_by_step() -> None:
    async def scenario() -> list[bytes]:
        box = Outbox(1000)
        frames = []
        for i in range(100):
            box.notify(b"progress %d" % i, key="token-1")
            frames.extend(await drain(box))
        return frames

    assert asyncio.run(scenario()) == [b"progress %d" % i for i in range(100)]


def test_progress_for_a_client_behind_keeps_only_the_newest_of_each_token() -> None:
    async def scenario() -> list[bytes]:
        box = Outbox(100)
        await box.put(b"a" * 60)  # the client is behind: over half full
        for i in range(1000):
            box.notify(b"progress %d" % i, key="token-1")
        box.notify(b"other", key="token-2")
        return await drain(box)

    assert asyncio.run(scenario()) == [b"a" * 60, b"progress 999", b"other"]


def test_progress_queued_step_by_step_then_coalesced_goes_out_in_order() -> None:
    async def scenario() -> list[bytes]:
        box = Outbox(100)
        for i in range(10):  # 10 bytes each: half full after five
            box.notify(b"progress %d" % i, key="t")
        return await drain(box)

    frames = asyncio.run(scenario())
    assert frames == [b"progress %d" % i for i in range(4)] + [b"progress 9"]


def test_an_answer_waits_for_room_and_goes_out_in_order() -> None:
    async def scenario() -> list[bytes]:
        box = Outbox(10)
        await box.put(b"a" * 8)
        waiting = asyncio.ensure_future(box.put(b"b" * 8))
        await asyncio.sleep(0)
        assert not waiting.done()  # no room: the producer waits
        first = await box.get()
        await asyncio.wait_for(waiting, 1)
        second = await box.get()
        assert first is not None and second is not None
        return [first, second]

    assert asyncio.run(scenario()) == [b"a" * 8, b"b" * 8]


def test_a_frame_larger_than_the_limit_goes_out_when_the_outbox_is_empty() -> None:
    async def scenario() -> bytes | None:
        box = Outbox(10)
        await asyncio.wait_for(box.put(b"z" * 100), 1)
        return await box.get()

    assert asyncio.run(scenario()) == b"z" * 100


def test_closing_wakes_waiting_answers_and_readers() -> None:
    async def scenario() -> tuple[bytes | None, bytes | None]:
        box = Outbox(10)
        await box.put(b"a" * 10)
        writer = asyncio.ensure_future(box.put(b"b"))
        reader_box = Outbox(10)
        reader = asyncio.ensure_future(reader_box.get())
        await asyncio.sleep(0)
        box.close()
        reader_box.close()
        await asyncio.wait_for(writer, 1)
        return await box.get(), await asyncio.wait_for(reader, 1)

    left, nothing = asyncio.run(scenario())
    assert left == b"a" * 10  # what was queued can still be sent
    assert nothing is None


def test_a_drop_count_goes_out_even_when_nothing_follows_it() -> None:
    async def scenario() -> list[bytes | None]:
        box = Outbox(10, dropped_notice=notice)
        box.notify(b"x" * 10)
        box.notify(b"y")
        first = await box.get()
        second = await asyncio.wait_for(box.get(), 1)
        return [first, second]

    assert asyncio.run(scenario()) == [b"x" * 10, b"dropped 1"]


def test_a_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive limit"):
        Outbox(0)
