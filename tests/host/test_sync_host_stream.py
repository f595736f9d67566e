"""``SyncHost.stream``: a stream's errors reach the caller's thread as the host's own
exceptions, with their codes, after the items sent before them, and the host serves on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mcphost.host import PluginSource, SyncHost
from mcphost.sdk.errors import (
    ConfigError,
    InvalidArguments,
    MCPHostError,
    PluginNotFound,
    StreamLimitExceeded,
    ToolError,
    ToolNotFound,
    WorkerCrashed,
)

STREAMS = """
import os
from collections.abc import Iterator

from mcphost.sdk import Plugin, ToolError

plugin = Plugin("streams")


@plugin.tool
def numbers(n: int) -> Iterator[int]:
    \"\"\"The numbers 0..n-1.\"\"\"
    yield from range(n)


@plugin.tool
def runs_dry(n: int) -> Iterator[int]:
    \"\"\"n numbers, then a failure of the tool's own.\"\"\"
    yield from range(n)
    raise ToolError(f"ran dry after {n} items", code="dry")


@plugin.tool
def dies() -> Iterator[int]:
    \"\"\"Ends its worker before the first item.\"\"\"
    os._exit(3)
    yield 0


@plugin.tool
def plain() -> str:
    \"\"\"Not a stream.\"\"\"
    return "ok"
"""


@pytest.fixture
def sync_host(
    home_dir: Path, write_plugin_source: Callable[..., PluginSource]
) -> Callable[[str], SyncHost]:
    """``sync_host(config)``: a SyncHost serving the streams plugin, ``config`` as the
    home's config.toml (unsigned plugins allowed; the rlimits backend runs everywhere)."""
    source = write_plugin_source("streams", STREAMS)

    def make(config: str = "") -> SyncHost:
        (home_dir / "config.toml").write_text(
            'allow_unsigned = true\nisolation = "rlimits"\n' + config
        )
        return SyncHost(home_dir, sources=[source], environment=False, registry=False)

    return make


@pytest.fixture
def host(sync_host: Callable[[str], SyncHost], no_leftover_workers: None) -> Iterator[SyncHost]:
    with sync_host("") as h:
        yield h


def drain(it: Iterator[int]) -> tuple[list[int], BaseException | None]:
    """The items of a stream and the error that ended it (None: it ended normally)."""
    items: list[int] = []
    try:
        for item in it:
            items.append(item)
    except MCPHostError as exc:
        return items, exc
    return items, None


def test_a_tool_error_ends_the_stream_after_its_items_with_the_tools_code(
    host: SyncHost,
) -> None:
    items, error = drain(host.stream("streams.runs_dry", {"n": 3}))
    assert items == [0, 1, 2]
    assert isinstance(error, ToolError)
    assert (error.code, error.message) == ("dry", "ran dry after 3 items")
    assert host.call("streams.plain") == "ok"
    assert list(host.stream("streams.numbers", {"n": 2})) == [0, 1]


def test_a_worker_that_dies_during_a_stream_raises_worker_crashed_and_is_restarted(
    host: SyncHost,
) -> None:
    items, error = drain(host.stream("streams.dies"))
    assert items == []
    assert isinstance(error, WorkerCrashed)
    assert "streams" in error.message
    assert list(host.stream("streams.numbers", {"n": 3})) == [0, 1, 2]


@pytest.mark.parametrize(
    ("name", "args", "kind", "text"),
    [
        ("streams.nothing", {}, ToolNotFound, "plugin streams has no tool 'nothing'"),
        ("elsewhere.numbers", {}, PluginNotFound, "no plugin named 'elsewhere'"),
        ("streams.numbers", {"n": "three"}, InvalidArguments, "n"),
    ],
    ids=["unknown-tool", "unknown-plugin", "bad-arguments"],
)
def test_a_stream_that_cannot_start_raises_the_reason_in_the_callers_thread(
    host: SyncHost, name: str, args: dict[str, object], kind: type[MCPHostError], text: str
) -> None:
    items, error = drain(host.stream(name, args))
    assert items == []
    assert isinstance(error, kind), error
    assert text in error.message
    assert list(host.stream("streams.numbers", {"n": 1})) == [0]


def test_streaming_switched_off_refuses_every_stream_naming_the_setting(
    sync_host: Callable[[str], SyncHost], no_leftover_workers: None
) -> None:
    with sync_host("[features]\nstreaming = false\n") as host:
        items, error = drain(host.stream("streams.numbers", {"n": 2}))
        assert items == []
        assert isinstance(error, ConfigError)
        assert "features.streaming = false" in error.message
        assert host.call("streams.plain") == "ok"


def test_a_sync_stream_takes_the_async_streams_limits_and_priority(host: SyncHost) -> None:
    """``limits`` lowers the configured limits for this stream alone; a priority out of
    range is refused in the caller's thread, naming the range."""
    items, error = drain(host.stream("streams.numbers", {"n": 10}, limits={"max_items": 4}))
    assert items == [0, 1, 2, 3]
    assert isinstance(error, StreamLimitExceeded), error
    assert "max_items" in error.message

    items, error = drain(host.stream("streams.numbers", {"n": 3}, priority=101))
    assert items == []
    assert isinstance(error, InvalidArguments), error
    assert "0 to 100" in error.message

    assert list(host.stream("streams.numbers", {"n": 3}, priority=0, window=1)) == [0, 1, 2]
    assert host.call("streams.plain", priority=0) == "ok"
