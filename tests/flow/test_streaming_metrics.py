"""Stream metrics with real workers, as a Prometheus scrape shows them: admitted,
completed, failed by reason, cancelled, rejected, backpressure events and seconds
paused, items and bytes, first-item and duration histograms, and the gauges of what
runs and waits now."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcphost.host import Host
from mcphost.host.observe.export import render
from mcphost.sdk.errors import Busy, StreamLimitExceeded


def samples(host: Host) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert host.metrics is not None
    text = render(host.metrics, host).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if "stream" in s.name:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(got: dict, name: str, tool: str, **labels: str) -> float:
    key = (name, tuple(sorted({"plugin": "flowkit", "tool": tool, **labels}.items())))
    return got[key]


def test_a_scrape_shows_what_streams_did(flow_host: Callable[..., Host]) -> None:
    async def scenario() -> None:
        async with flow_host(high_watermark=8192, low_watermark=1024, window_bytes=4096) as host:
            n = 0
            async for _ in host.stream("flowkit.numbers", {"n": 200, "size": 300}):
                n += 1
                if n % 50 == 0:
                    await asyncio.sleep(0.05)  # slow: the producer pauses
            with pytest.raises(StreamLimitExceeded):
                async for _ in host.stream("flowkit.endless", {}, limits={"max_items": 5}):
                    pass
            stream = host.stream("flowkit.endless", {})
            async for _ in stream:
                break
            await stream.aclose()  # type: ignore[attr-defined]
            got = samples(host)
            num = "flowkit.numbers"
            assert value(got, "mcphost_streams_admitted_total", num) == 1
            assert value(got, "mcphost_streams_completed_total", num) == 1
            assert value(got, "mcphost_stream_items_total", num) == 200
            assert value(got, "mcphost_stream_bytes_total", num) > 200 * 300
            assert value(got, "mcphost_stream_backpressure_events_total", num) >= 1
            assert value(got, "mcphost_stream_paused_seconds_total", num) > 0
            assert value(got, "mcphost_stream_duration_seconds_count", num) == 1
            assert value(got, "mcphost_stream_first_item_seconds_count", num) == 1
            end = "flowkit.endless"
            assert value(got, "mcphost_streams_admitted_total", end) == 2
            assert value(got, "mcphost_streams_failed_total", end, reason="max_items") == 1
            assert value(got, "mcphost_streams_cancelled_total", end) == 1
            assert value(got, "mcphost_stream_items_total", end) == 6
            assert value(got, "mcphost_streams_active", end) == 0
            assert value(got, "mcphost_stream_buffered_bytes", end) == 0

    asyncio.run(scenario())


def test_the_gauges_show_running_and_queued_streams_and_rejections_count(
    flow_host: Callable[..., Host],
) -> None:
    async def scenario() -> None:
        async with flow_host(max_concurrent=1, admission_timeout=0.2) as host:
            stream = host.stream("flowkit.endless", {"size": 100})
            await anext(stream)  # type: ignore[call-overload]
            waiting = asyncio.create_task(host.stream("flowkit.numbers", {"n": 1}).__anext__())
            await asyncio.sleep(0.05)
            got = samples(host)
            assert value(got, "mcphost_streams_active", "flowkit.endless") == 1
            assert value(got, "mcphost_streams_queued", "flowkit.numbers") == 1
            assert value(got, "mcphost_stream_buffered_bytes", "flowkit.endless") > 0
            with pytest.raises(Busy):
                await waiting
            await stream.aclose()  # type: ignore[attr-defined]
            got = samples(host)
            assert (
                value(got, "mcphost_streams_rejected_total", "flowkit.numbers", reason="busy") == 1
            )
            assert value(got, "mcphost_streams_queued", "flowkit.numbers") == 0
            assert value(got, "mcphost_streams_active", "flowkit.endless") == 0

    asyncio.run(scenario())


def test_a_suspended_stream_is_counted_apart_from_the_active_ones(
    flow_host: Callable[..., Host],
) -> None:
    async def scenario() -> None:
        async with flow_host(max_concurrent=1, admission_timeout=10) as host:
            low = host.stream("flowkit.endless", {}, priority=9)
            await anext(low)  # type: ignore[call-overload]
            got = samples(host)
            assert value(got, "mcphost_streams_active", "flowkit.endless") == 1
            assert value(got, "mcphost_streams_suspended", "flowkit.endless") == 0
            # A higher priority takes the only place: the low stream is suspended.
            high = host.stream("flowkit.numbers", {"n": 10**6}, priority=0)
            await anext(high)  # type: ignore[call-overload]
            got = samples(host)
            assert value(got, "mcphost_streams_active", "flowkit.numbers") == 1
            assert value(got, "mcphost_streams_active", "flowkit.endless") == 0
            assert value(got, "mcphost_streams_suspended", "flowkit.endless") == 1
            await high.aclose()  # type: ignore[attr-defined]
            await anext(low)  # type: ignore[call-overload]
            got = samples(host)
            assert value(got, "mcphost_streams_active", "flowkit.endless") == 1
            assert value(got, "mcphost_streams_suspended", "flowkit.endless") == 0
            await low.aclose()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_a_host_that_never_streamed_exports_no_stream_families(
    flow_host: Callable[..., Host],
) -> None:
    async def scenario() -> None:
        async with flow_host() as host:
            assert await host.call("flowkit.pid") > 0
            assert samples(host) == {}

    asyncio.run(scenario())


async def test_status_lists_the_active_streams(flow_host: Callable[..., Host]) -> None:
    from mcphost.host.observe.control import ask

    async with flow_host() as host:
        stream = host.stream("flowkit.endless", {}, priority=3)
        got = [await anext(stream) for _ in range(3)]
        assert host.control is not None
        answer = await asyncio.to_thread(ask, host.control.path, {"get": "status"})
        await stream.aclose()
    rows = answer["status"]["streams"]
    assert got and len(rows) == 1
    assert rows[0]["tool"] == "flowkit.endless" and rows[0]["priority"] == 3
    assert rows[0]["state"] in ("flowing", "paused") and rows[0]["items"] >= 3
