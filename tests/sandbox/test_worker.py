"""A real worker subprocess serving a plugin written into tmp_path, driven by spawn_worker."""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
import pytest
from support.subprocess_coverage import without_coverage
from worker_helpers import running, wait_for_file

from mcphost.sandbox import Limits, RlimitBackend, WorkerClient, WorkerSpec, spawn_worker
from mcphost.sdk import CallCancelled, MCPHostError, PluginError, ToolError, ToolTimeout

#: The write_plugin fixture (tests/sandbox/conftest.py).
PluginWriter = Callable[..., WorkerSpec]

PROBE = '''
import asyncio
import os
import sys
import time
from pathlib import Path

from mcphost.sdk import Context, Plugin, ToolError

plugin = Plugin("probe")


@plugin.tool
def echo(text: str) -> str:
    """Return the text."""
    return text


@plugin.tool
async def nap(seconds: float, tag: str = "") -> str:
    """Sleep on the worker's loop, then return the tag."""
    await asyncio.sleep(seconds)
    return tag


@plugin.tool
def block(seconds: float) -> float:
    """Sleep on a worker thread."""
    time.sleep(seconds)
    return seconds


@plugin.tool
async def wait_forever(ctx: Context) -> None:
    """Wait until cancelled; record that the cancellation arrived."""
    (ctx.data_dir / "started").write_text("yes")
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        (ctx.data_dir / "cancelled").write_text("yes")
        raise


@plugin.tool
async def produce(n: int, ctx: Context):
    """Stream 0..n-1, recording how many items were produced and when it was closed."""
    try:
        for i in range(n):
            # Written whole, then renamed: a reader never sees a half-written count.
            (ctx.data_dir / "produced.tmp").write_text(str(i + 1))
            os.replace(ctx.data_dir / "produced.tmp", ctx.data_dir / "produced")
            yield i
    finally:
        (ctx.data_dir / "closed").write_text("yes")


@plugin.tool
def shout(text: str) -> str:
    """Print to stdout and stderr, then answer."""
    print("stdout says", text, flush=True)
    print("stderr says", text, file=sys.stderr, flush=True)
    return text.upper()


@plugin.tool
def environment() -> dict[str, str]:
    """The worker's environment."""
    return dict(os.environ)


@plugin.tool
async def loop_ready() -> bool:
    """Answered on the worker's event loop: its thread has started and imported it."""
    return True


@plugin.tool
def open_fds() -> dict[int, str]:
    """The file descriptors open in the worker, with what each one is."""
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own fd, closed by now
            pass
    return fds


@plugin.tool
async def child_fds() -> dict[int, str]:
    """What each descriptor of a child started from the worker's event loop is."""
    listing = (
        "import os; print(*[f + '=' + os.readlink('/proc/self/fd/' + f)"
        " for f in os.listdir('/proc/self/fd') if os.path.exists('/proc/self/fd/' + f)])"
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", listing,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await child.communicate()
    return {int(fd): what for fd, what in (p.split("=", 1) for p in out.decode().split())}


@plugin.tool
def fail(code: str) -> None:
    """Fail on purpose with the given code."""
    raise ToolError("failed on purpose", code=code, data={"why": "asked"})
'''

Serve = Callable[..., Awaitable[WorkerClient]]


async def test_handshake_lists_the_tools_with_their_schemas(
    write_plugin: PluginWriter, backend: RlimitBackend, no_leftover_workers: None
) -> None:
    spec = write_plugin("probe", PROBE)

    async with running(spec, backend) as w:
        assert w.hello is not None
        assert w.hello.plugin == "probe" and w.hello.plugin_version == "1.0.0"
        assert w.hello.pid == w.pid != os.getpid()
        tools = {t.name: t for t in w.hello.tools}
        assert {"echo", "nap", "produce", "wait_forever"} <= set(tools)
        assert tools["echo"].input_schema["required"] == ["text"]
        assert tools["echo"].description == "Return the text."
        assert tools["produce"].kind == "stream"
        assert tools["echo"].kind == "call"


def test_many_concurrent_calls_are_multiplexed_on_one_worker(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("probe", PROBE)

    async def scenario() -> tuple[list[str], float]:
        async with running(spec, backend) as w:
            t0 = time.perf_counter()
            results = await asyncio.gather(
                *(w.call("nap", {"seconds": 0.3, "tag": f"call-{i}"}) for i in range(50))
            )
            return results, time.perf_counter() - t0

    results, elapsed = asyncio.run(scenario())
    # Every caller gets its own answer, and the 50 naps overlapped (15 s one by one).
    assert results == [f"call-{i}" for i in range(50)]
    assert elapsed < 5.0, elapsed


def test_sync_tools_run_side_by_side_on_the_thread_pool(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("probe", PROBE)

    async def scenario() -> float:
        async with running(spec, backend) as w:
            t0 = time.perf_counter()
            await asyncio.gather(*(w.call("block", {"seconds": 0.5}) for _ in range(8)))
            return time.perf_counter() - t0

    # One after another they take 4 s; on the pool of 8 threads about 0.5 s.
    assert asyncio.run(scenario()) < 2.5


async def test_a_call_past_its_deadline_fails_with_tool_timeout_and_the_worker_goes_on(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("probe", PROBE)

    async with running(spec, backend) as w:
        t0 = time.perf_counter()
        with pytest.raises(ToolTimeout) as info:
            await w.call("nap", {"seconds": 30}, timeout=0.3)
        assert time.perf_counter() - t0 < 2.0
        assert "probe.nap" in info.value.message and "0.3s" in info.value.message
        assert info.value.code == "tool_timeout"
        assert await w.call("echo", {"text": "still here"}) == "still here"
        assert w.inflight == 0


async def test_cancelling_a_caller_cancels_the_call_in_the_worker_which_stays_usable(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("probe", PROBE)
    data = Path(spec.data_dir)

    async with running(spec, backend) as w:
        task = asyncio.create_task(w.call("wait_forever", {}))
        await wait_for_file(data / "started", bool)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The worker's task saw the cancellation (it wrote its marker).
        await wait_for_file(data / "cancelled", lambda t: t == "yes")
        assert await w.call("echo", {"text": "next"}) == "next"
        assert w.inflight == 0 and w.alive


async def test_closing_a_stream_early_closes_the_generator_in_the_worker(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("probe", PROBE)
    data = Path(spec.data_dir)

    async with running(spec, backend) as w:
        items = []
        stream = w.stream("produce", {"n": 10_000}, window=4)
        async for item in stream:
            items.append(item)
            if len(items) == 3:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        assert items == [0, 1, 2]
        await wait_for_file(data / "closed", lambda t: t == "yes")
        produced = int((data / "produced").read_text())
        assert produced < 10
        assert await w.call("echo", {"text": "after"}) == "after"


def test_a_stream_never_runs_more_than_its_window_ahead_of_a_slow_consumer(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("probe", PROBE)
    data = Path(spec.data_dir)
    window = 4

    def produced() -> int:
        return int((data / "produced").read_text())

    async def scenario() -> list[int]:
        async with running(spec, backend) as w:
            items: list[int] = []
            async for item in w.stream("produce", {"n": 60}, window=window):
                items.append(item)
                if len(items) == 1:
                    # The worker fills its window (plus the one item it holds while it
                    # waits for credit) and then stops...
                    await wait_for_file(data / "produced", lambda t: int(t) == window + 1)
                    # ...and stays stopped while the consumer takes nothing more: many
                    # round trips through the worker's loop later it has not moved on.
                    for _ in range(20):
                        await w.ping(2.0)
                    assert produced() == window + 1
                # Every credit the host sent was for an item it consumed.
                assert produced() <= len(items) + window + 1
            return items

    assert asyncio.run(scenario()) == list(range(60))


async def test_a_plugin_whose_import_fails_gives_a_clear_error(
    write_plugin: PluginWriter, backend: RlimitBackend, no_leftover_workers: None
) -> None:
    spec = write_plugin("broken", "import no_such_module_for_mcphost\n")

    with pytest.raises(MCPHostError) as info:
        await spawn_worker(spec, backend)
    assert info.value.code == "plugin_load_failed"
    assert "broken" in info.value.message
    assert "No module named 'no_such_module_for_mcphost'" in info.value.message


@pytest.mark.parametrize(
    ("source", "entry", "expected"),
    [
        ("plugin = {'not': 'a plugin'}\n", None, "names a dict, not an mcphost.sdk.Plugin"),
        (
            "from mcphost.sdk import Plugin\nplugin = Plugin('other')\n",
            None,
            "holds plugin 'other', but it was installed as 'named'",
        ),
        ("x = 1\n", "named:missing", "has no attribute 'missing'"),
    ],
)
async def test_an_entry_point_that_does_not_name_the_plugin_is_refused_with_a_reason(
    write_plugin: PluginWriter,
    backend: RlimitBackend,
    source: str,
    entry: str | None,
    expected: str,
) -> None:
    spec = write_plugin("named", source, entry=entry)

    with pytest.raises(MCPHostError) as info:
        await spawn_worker(spec, backend)
    assert expected in info.value.message
    assert "named" in info.value.message


def test_plugin_prints_go_to_the_host_log_and_never_corrupt_the_channel(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("probe", "print('hello at import time')\n" + PROBE)
    lines: list[tuple[str, str, str]] = []

    def on_log(plugin: str, level: str, message: str, call_id: int) -> None:
        lines.append((plugin, level, message))

    async def scenario() -> None:
        async with running(spec, backend, on_log=on_log) as w:
            results = await asyncio.gather(*(w.call("shout", {"text": f"t{i}"}) for i in range(20)))
            assert results == [f"T{i}" for i in range(20)]
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and len(lines) < 41:
                await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert ("probe", "info", "hello at import time") in lines
    assert ("probe", "info", "stdout says t7") in lines
    assert ("probe", "warning", "stderr says t7") in lines


async def test_tool_errors_cross_the_wire_with_their_code_message_and_data(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("probe", PROBE)

    async with running(spec, backend) as w:
        with pytest.raises(ToolError) as info:
            await w.call("fail", {"code": "my_code"})
        assert info.value.code == "my_code"
        assert info.value.message == "failed on purpose"
        assert info.value.data == {"why": "asked"}
        with pytest.raises(PluginError) as missing:
            await w.call("no_such_tool", {})
        assert missing.value.code == "tool_not_found"
        assert "echo" in missing.value.message  # it lists the tools there are


def test_the_worker_runs_with_a_clean_environment_only_its_channel_fd_and_its_rlimits(
    write_plugin: PluginWriter, backend: RlimitBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCPHOST_TEST_SECRET", "do-not-leak")
    limits = Limits(memory_mb=512, cpu_seconds=30, open_files=64, file_size_mb=8)
    spec = write_plugin("probe", PROBE, limits=limits)

    async def scenario() -> tuple[dict[str, str], dict[str, str], psutil.Process]:
        async with running(spec, backend) as w:
            env = await w.call("environment", {})
            # The loop's thread starts beside the channel's and imports its event loop
            # (reading directories as it does): list the fds once that has settled.
            assert await w.call("loop_ready", {}) is True
            fds = await w.call("open_fds", {})
            proc = psutil.Process(w.pid)
            mib = 1024 * 1024
            assert proc.rlimit(resource.RLIMIT_AS) == (512 * mib, 512 * mib)
            assert proc.rlimit(resource.RLIMIT_NOFILE) == (64, 64)
            assert proc.rlimit(resource.RLIMIT_FSIZE) == (8 * mib, 8 * mib)
            assert proc.rlimit(resource.RLIMIT_CORE) == (0, 0)
            assert proc.rlimit(resource.RLIMIT_CPU)[0] == 30
            assert proc.cwd() == spec.work_dir
            return env, fds, proc

    env, fds, _ = asyncio.run(scenario())
    assert "MCPHOST_TEST_SECRET" not in env
    allowed = {"PATH", "LANG", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "LC_CTYPE"}
    allowed.add("MCPHOST_LOOP")  # the host's choice of event loop, when it made one
    assert set(without_coverage(env)) <= allowed
    # stdin, stdout, stderr, the channel, and what the worker opened itself (its event
    # loop's epoll, io_uring, eventfd and wake-up pipes or socketpair): nothing inherited.
    own = ("anon_inode:[eventpoll]", "anon_inode:[io_uring]", "anon_inode:[eventfd]")
    own += ("pipe:", "socket:")
    extra = {fd: what for fd, what in fds.items() if int(fd) > 3}
    assert all(what.startswith(own) for what in extra.values()), repr(fds)
    assert len(extra) <= 8, fds


def test_a_child_a_tool_starts_from_the_workers_loop_does_not_inherit_the_channel(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("probe", PROBE)

    async def scenario() -> dict[str, str]:
        async with running(spec, backend) as w:
            fds: dict[str, str] = await w.call("child_fds", {})
            return fds

    fds = asyncio.run(scenario())
    # Only its stdin, stdout and stderr (an event loop may hold copies of them while it
    # spawns): the worker's channel, which would let the child speak for the worker,
    # stays behind on any event loop.
    standard = {fds["0"], fds["1"], fds["2"]}
    assert set(fds.values()) <= standard, fds


def test_the_work_dir_is_removed_when_the_worker_ends(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("probe", PROBE)

    async def scenario() -> None:
        async with running(spec, backend) as w:
            assert Path(spec.work_dir).is_dir()
            assert await w.call("echo", {"text": "x"}) == "x"

    asyncio.run(scenario())
    assert not Path(spec.work_dir).exists()


async def test_closing_a_worker_ends_the_calls_it_was_running_with_an_error(
    write_plugin: PluginWriter, backend: RlimitBackend, no_leftover_workers: None
) -> None:
    # Shutdown cancels what runs: the caller gets an error, never a hang.
    spec = write_plugin("probe", PROBE)

    client = await spawn_worker(spec, backend)
    task = asyncio.create_task(client.call("wait_forever", {}))
    await wait_for_file(Path(spec.data_dir) / "started", bool)
    await client.close()
    with pytest.raises(MCPHostError) as info:
        await asyncio.wait_for(task, 5)
    assert info.value.code in (CallCancelled.code, "worker_crashed")
