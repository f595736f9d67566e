"""Backpressure with real workers: a slow consumer pauses the producer at the high
watermark and resumes it at the low one, the host's buffer stays bounded, and nothing
is lost, duplicated or reordered; a consumer that leaves cancels the producer (its
generator's ``finally`` runs), and a producer that dies ends the stream with an error
after the items delivered, saying how many."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from flow_helpers import closed_generators

from mcphost.host import Host
from mcphost.sdk.errors import WorkerCrashed

WINDOW_BYTES = 4096
HIGH = 16 * 1024
LOW = 4 * 1024


@pytest.mark.parametrize("tool", ["flowkit.numbers", "flowkit.anumbers"])
def test_a_slow_consumer_pauses_the_producer_and_the_buffer_stays_bounded(
    flow_host: Callable[..., Host], tool: str
) -> None:
    async def scenario() -> None:
        async with flow_host(
            window_bytes=WINDOW_BYTES, high_watermark=HIGH, low_watermark=LOW, window_items=64
        ) as host:
            got: list[int] = []
            peaks: list[int] = []
            states: set[str] = set()
            async for item in host.stream(tool, {"n": 600, "size": 500}):
                got.append(item["i"])
                if len(got) % 40 == 0:
                    # The consumer dawdles: the producer fills the buffer meanwhile.
                    await asyncio.sleep(0.02)
                    (active,) = host.flow.snapshot()
                    states.add(active["state"])
                    peaks.append(active["buffered"])
            assert got == list(range(600)), "items lost, duplicated or out of order"
            assert "paused" in states, "the stream never paused above its high watermark"
            # Bounded: the high watermark plus what was in flight (one byte window and
            # at most one item beyond it).
            assert max(peaks) <= HIGH + WINDOW_BYTES + 600
            stats = host.flow.metrics.tools[tool]  # type: ignore[union-attr]
            assert stats.pauses >= 1
            assert stats.completed == 1 and stats.items == 600
            assert host.flow.snapshot() == []

    asyncio.run(scenario())


def test_a_fast_consumer_never_pauses_and_gets_every_item_in_order(
    flow_host: Callable[..., Host],
) -> None:
    async def scenario() -> None:
        async with flow_host() as host:
            got = [item["i"] async for item in host.stream("flowkit.numbers", {"n": 20000})]
            assert got == list(range(20000))
            stats = host.flow.metrics.tools["flowkit.numbers"]  # type: ignore[union-attr]
            assert stats.pauses == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("tool", ["flowkit.endless", "flowkit.anumbers"])
def test_a_consumer_that_goes_away_cancels_the_producer_and_its_finally_runs(
    flow_host: Callable[..., Host], tool: str
) -> None:
    async def scenario() -> None:
        async with flow_host(high_watermark=2048, low_watermark=0) as host:
            before = await closed_generators(host)
            args = {"n": 10**9} if tool == "flowkit.anumbers" else {}
            stream = host.stream(tool, args)
            async for item in stream:
                if item["i"] == 50:
                    break
            await stream.aclose()  # type: ignore[attr-defined]
            for _ in range(200):  # the Cancel reaches the worker, its finally runs
                if await closed_generators(host) > before:
                    break
                await asyncio.sleep(0.01)
            assert await closed_generators(host) == before + 1
            stats = host.flow.metrics.tools[tool]  # type: ignore[union-attr]
            assert stats.cancelled == 1 and stats.completed == 0
            assert host.flow.snapshot() == []

    asyncio.run(scenario())


def test_a_producer_that_dies_ends_the_stream_after_its_items_saying_how_many(
    flow_host: Callable[..., Host],
) -> None:
    async def scenario() -> None:
        async with flow_host() as host:
            got: list[int] = []
            with pytest.raises(WorkerCrashed) as info:
                async for item in host.stream("flowkit.crashes_after", {"n": 25}):
                    got.append(item)
            assert got == list(range(25))
            assert info.value.data["delivered"] == len(got)
            stats = host.flow.metrics.tools["flowkit.crashes_after"]  # type: ignore[union-attr]
            assert stats.failed == {"worker_crashed": 1}
            # The host serves on: the plugin is restarted for the next stream.
            assert [i async for i in host.stream("flowkit.numbers", {"n": 3})] == [
                {"i": i, "pad": ""} for i in range(3)
            ]

    asyncio.run(scenario())


def test_a_front_end_holding_items_for_a_slow_client_pauses_the_stream(
    flow_host: Callable[..., Host],
) -> None:
    """What a front end does for a slow client: it holds the bytes it has not written
    yet; held bytes count toward the watermarks, so the producer waits for the client."""

    async def scenario() -> None:
        async with flow_host(high_watermark=8192, low_watermark=1024) as host:
            marks = []
            stream = host.flow.stream(
                "flowkit.numbers",
                "flowkit",
                host._supervisors["flowkit"].acquire,
                "numbers",
                {"n": 400, "size": 200},
                on_start=marks.append,
            )
            got = 0
            held: list[int] = []
            paused_while_held: list[bool] = []

            async def client() -> None:
                # The slow client: every 20 ms it takes what the front end holds.
                while True:
                    await asyncio.sleep(0.02)
                    if marks:
                        paused_while_held.append(marks[0].paused)
                        while held:
                            marks[0].release(held.pop())

            reader = asyncio.create_task(client())
            try:
                async for _item in stream:
                    got += 1
                    held.append(250)
                    marks[0].hold(250)
            finally:
                reader.cancel()
            assert got == 400
            assert marks[0].pauses >= 1
            assert any(paused_while_held), "held bytes never paused the producer"
            assert marks[0].peak <= 8192 + 1024 * 1024 + 250  # high + byte window + one

    asyncio.run(scenario())
