"""Per-stream limits with real workers: each ends the stream with an error naming the
limit and its value after the items within it, and cancels the producer; a call may
lower a limit, never raise it; admission holds the concurrency limits and says
``busy`` with its figures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flow_helpers import closed_generators

from mcphost.host import Host, PluginSource
from mcphost.sdk.errors import Busy, InvalidArguments, StreamLimitExceeded


async def drain(host: Host, tool: str, args: dict[str, Any], **kw: Any) -> list[Any]:
    return [item async for item in host.stream(tool, args, **kw)]


async def ended_by(host: Host, tool: str, args: dict[str, Any], **kw: Any) -> tuple[int, Any]:
    got = 0
    with pytest.raises(StreamLimitExceeded) as info:
        async for _ in host.stream(tool, args, **kw):
            got += 1
    return got, info.value


async def producer_closed(host: Host, before: int) -> None:
    for _ in range(300):
        if await closed_generators(host) > before:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the producer's generator was not closed")


def test_max_items_ends_the_stream_after_that_many_and_cancels_the_producer(
    flow_host: Callable[..., Host],
) -> None:
    async def scenario() -> None:
        async with flow_host(max_items=100) as host:
            before = await closed_generators(host)
            got, err = await ended_by(host, "flowkit.endless", {})
            assert got == 100
            assert err.code == "stream_limit"
            assert err.data == {
                "tool": "flowkit.endless",
                "limit": "max_items",
                "value": 100,
                "delivered": 100,
            }
            assert "max_items = 100 items" in err.message
            await producer_closed(host, before)
            # A stream of exactly the limit completes.
            assert len(await drain(host, "flowkit.numbers", {"n": 100})) == 100
            # A call may lower it ...
            got, err = await ended_by(host, "flowkit.numbers", {"n": 50}, limits={"max_items": 7})
            assert got == 7 and err.data["value"] == 7
            # ... never raise it.
            with pytest.raises(
                InvalidArguments, match=r"above the configured streaming\.max_items"
            ):
                await drain(host, "flowkit.numbers", {"n": 5}, limits={"max_items": 1000})
            stats = host.flow.metrics.tools  # type: ignore[union-attr]
            assert stats["flowkit.endless"].failed == {"max_items": 1}
            assert stats["flowkit.numbers"].failed == {"max_items": 1}

    asyncio.run(scenario())


def test_byte_limits_name_the_limit_and_the_item(flow_host: Callable[..., Host]) -> None:
    async def scenario() -> None:
        async with flow_host() as host:
            got, err = await ended_by(
                host, "flowkit.numbers", {"n": 100, "size": 100}, limits={"max_bytes": 1000}
            )
            assert err.data["limit"] == "max_bytes" and err.data["value"] == 1000
            assert 0 < got < 10 and err.data["delivered"] == got
            got, err = await ended_by(
                host, "flowkit.numbers", {"n": 10, "size": 5000}, limits={"max_item_bytes": 4096}
            )
            assert got == 0
            assert err.data["limit"] == "max_item_bytes"
            assert "item 0 is" in err.message

    asyncio.run(scenario())


def test_max_duration_and_idle_timeout_end_a_stream_that_runs_too_long_or_goes_quiet(
    flow_host: Callable[..., Host],
) -> None:
    async def scenario() -> None:
        async with flow_host() as host:
            before = await closed_generators(host)
            got, err = await ended_by(
                host,
                "flowkit.anumbers",
                {"n": 10**6, "delay": 0.01},
                limits={"max_duration": 0.3},
            )
            assert err.data["limit"] == "max_duration" and err.data["value"] == 0.3
            assert got > 0 and err.data["delivered"] == got
            await producer_closed(host, before)
            before = await closed_generators(host)
            got, err = await ended_by(
                host, "flowkit.goes_quiet", {"n": 5, "quiet": 30}, limits={"idle_timeout": 0.3}
            )
            assert got == 5
            assert err.data["limit"] == "idle_timeout"
            assert "no item for" in err.message
            await producer_closed(host, before)
            # A producer that keeps sending is not idle.
            items = await drain(
                host, "flowkit.anumbers", {"n": 20, "delay": 0.02}, limits={"idle_timeout": 0.3}
            )
            assert len(items) == 20

    asyncio.run(scenario())


def test_a_slow_consumer_is_waited_for_by_default_and_cancelled_by_policy(
    flow_host: Callable[..., Host],
) -> None:
    async def slow(host: Host, **limits: Any) -> list[int]:
        got: list[int] = []
        async for item in host.stream(
            "flowkit.numbers", {"n": 300, "size": 500}, limits=limits or None
        ):
            got.append(item["i"])
            if len(got) == 10:
                await asyncio.sleep(0.6)  # the producer waits at the high watermark
        return got

    async def scenario() -> None:
        async with flow_host(
            high_watermark=8192, low_watermark=1024, slow_consumer_timeout=0.2, window_bytes=4096
        ) as host:
            assert await slow(host) == list(range(300))  # policy wait
            with pytest.raises(StreamLimitExceeded) as info:
                await slow(host, slow_consumer_policy="cancel")
            err = info.value
            assert err.data["limit"] == "slow_consumer_timeout"
            assert err.data["value"] == 0.2
            assert "slow_consumer_policy = cancel" in err.message

    asyncio.run(scenario())


def test_bad_limits_and_priorities_are_refused_before_anything_runs(
    flow_host: Callable[..., Host],
) -> None:
    async def scenario() -> None:
        async with flow_host() as host:
            for limits, words in [
                ({"max_itemz": 3}, "unknown stream limit 'max_itemz'"),
                ({"max_items": 0}, "max_items must be a whole number above 0"),
                ({"max_items": 1.5}, "whole number"),
                ({"max_duration": "soon"}, "max_duration must be a number above 0"),
                ({"slow_consumer_policy": "drop"}, "'wait' or 'cancel'"),
            ]:
                with pytest.raises(InvalidArguments, match=words):
                    await drain(host, "flowkit.numbers", {"n": 1}, limits=limits)
            for prio in (101, -1, True, "high"):
                with pytest.raises(InvalidArguments, match="priority must be a whole number"):
                    await drain(host, "flowkit.numbers", {"n": 1}, priority=prio)
            assert host.flow.snapshot() == []

    asyncio.run(scenario())


def test_admission_holds_the_limits_and_a_waiter_past_its_timeout_is_busy(
    flow_host: Callable[..., Host],
) -> None:
    async def scenario() -> None:
        async with flow_host(
            max_concurrent=2, max_concurrent_per_plugin=2, admission_timeout=0.3
        ) as host:
            gates = [asyncio.Event() for _ in range(2)]
            started = [asyncio.Event() for _ in range(2)]

            async def holder(k: int) -> int:
                n = 0
                async for _ in host.stream("flowkit.endless", {}, priority=1):
                    n += 1
                    if n == 1:
                        started[k].set()
                        await gates[k].wait()
                        break
                return n

            tasks = [asyncio.create_task(holder(k)) for k in range(2)]
            for ev in started:
                await asyncio.wait_for(ev.wait(), 10)
            snap = host.flow.snapshot()
            assert [s["state"] for s in snap] == ["flowing", "flowing"] or "paused" in {
                s["state"] for s in snap
            }
            assert {s["priority"] for s in snap} == {1}
            with pytest.raises(Busy) as info:
                await drain(host, "flowkit.numbers", {"n": 1})
            assert info.value.data["running"] == 2
            assert info.value.data["ahead"] == 0
            waiter = asyncio.create_task(drain(host, "flowkit.numbers", {"n": 3}))
            await asyncio.sleep(0.05)
            queued = [s for s in host.flow.snapshot() if s["state"] == "queued"]
            assert [q["tool"] for q in queued] == ["flowkit.numbers"]
            gates[0].set()
            assert len(await asyncio.wait_for(waiter, 10)) == 3
            gates[1].set()
            await asyncio.gather(*tasks)
            stats = host.flow.metrics.tools["flowkit.numbers"]  # type: ignore[union-attr]
            assert stats.rejected == {"busy": 1}
            assert stats.admitted == 1

    asyncio.run(scenario())


def test_limits_changed_while_the_host_runs_apply_to_streams_admitted_after(
    flow_host: Callable[..., Host],
) -> None:
    async def scenario() -> None:
        async with flow_host(max_items=1000) as host:
            stream = host.stream("flowkit.numbers", {"n": 500})
            first = await anext(stream)  # type: ignore[call-overload]
            host.reconfigure(
                host.config.model_copy(
                    update={"streaming": host.config.streaming.model_copy(update={"max_items": 10})}
                )
            )
            rest = [item async for item in stream]
            assert 1 + len(rest) == 500, "the running stream kept its own limits"
            got, err = await ended_by(host, "flowkit.numbers", {"n": 500})
            assert got == 10 and err.data["value"] == 10
            assert first == {"i": 0, "pad": ""}

    asyncio.run(scenario())


def test_streaming_settings_in_config_toml_apply_live_and_a_tool_has_its_priority(
    home_dir: Path, flowkit: PluginSource
) -> None:
    config = home_dir / "config.toml"
    base = 'allow_unsigned = true\nisolation = "rlimits"\n'
    config.write_text(
        base + '[streaming]\ntool_priority = [{ tool = "flowkit.endless", priority = 9 }]\n'
    )

    async def scenario() -> None:
        async with Host(home_dir, sources=[flowkit], environment=False, registry=False) as host:
            stream = host.stream("flowkit.endless", {})
            await anext(stream)  # type: ignore[call-overload]
            assert [s["priority"] for s in host.flow.snapshot()] == [9]
            await stream.aclose()  # type: ignore[attr-defined]
            config.write_text(base + "[streaming]\nmax_items = 4\n")
            for _ in range(200):
                if host.config.streaming.max_items == 4:
                    break
                await asyncio.sleep(0.05)
            assert host.restart_pending == []
            got, err = await ended_by(host, "flowkit.endless", {})
            assert got == 4 and err.data["value"] == 4

    asyncio.run(scenario())
