"""A worker's stdout and stderr reach the host as a bounded number of log records,
however much the plugin prints; every line is either forwarded or counted."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import psutil
from support.waiting import wait_until
from worker_helpers import running

from mcphost.sandbox import RlimitBackend, WorkerSpec
from mcphost.sandbox.output import (
    MAX_LINE_BYTES,
    OUTPUT_BURST_LINES,
    OUTPUT_LINES_PER_SECOND,
    SUMMARY_INTERVAL,
)

PluginWriter = Callable[..., WorkerSpec]

FLOODER = """
import sys
from mcphost.sdk import Plugin

plugin = Plugin("flooder")


@plugin.tool
def flood(lines: int, width: int, stream: str = "stdout") -> int:
    out = sys.stdout if stream == "stdout" else sys.stderr
    row = "y" * width + "\\n"
    for _ in range(lines):
        out.write(row)
    out.write("z" * (3 * MAX) + "\\n")  # one line over the per-line bound
    out.flush()
    return lines + 1
""".replace("MAX", str(MAX_LINE_BYTES))

DROPPED = re.compile(r"plugin flooder wrote (\d+) more lines \((\d+) bytes\) to (\w+); dropped")


def test_a_plugin_flooding_stdout_and_stderr_becomes_a_bounded_number_of_log_records(
    write_plugin: PluginWriter, backend: RlimitBackend
) -> None:
    spec = write_plugin("flooder", FLOODER)
    records: list[tuple[str, str, int]] = []
    n = 200_000

    def on_log(plugin: str, level: str, message: str, call_id: int) -> None:
        records.append((level, message, call_id))

    def accounted(stream_level: str) -> int:
        total = 0
        for level, message, _ in records:
            if level != stream_level:
                continue
            m = DROPPED.fullmatch(message)
            total += int(m[1]) if m else 1
        return total

    async def scenario() -> float:
        me = psutil.Process()
        rss_before = me.memory_info().rss
        t0 = time.monotonic()
        async with running(spec, backend, on_log=on_log) as w:
            both = await asyncio.gather(
                w.call("flood", {"lines": n, "width": 200}),
                w.call("flood", {"lines": n, "width": 200, "stream": "stderr"}),
            )
            assert both == [n + 1, n + 1]
            # Wait (bounded) until every line is forwarded or counted as dropped.
            await wait_until(
                lambda: accounted("info") >= n + 1 and accounted("warning") >= n + 1,
                30,
                "every line forwarded or counted as dropped",
                interval=0.05,
            )
        elapsed = time.monotonic() - t0
        grew = (me.memory_info().rss - rss_before) / 2**20
        print(
            f"{len(records)} log records for {2 * (n + 1)} lines in {elapsed:.1f}s; "
            f"RSS +{grew:.1f} MB"
        )
        assert grew < 50, f"the host grew by {grew:.1f} MB (bound: 50 MB)"
        return elapsed

    elapsed = asyncio.run(scenario())
    assert accounted("info") == n + 1 and accounted("warning") == n + 1
    assert all(call_id == 0 for _, _, call_id in records)  # output belongs to no call
    forwarded = [m for _, m, _ in records if not DROPPED.fullmatch(m)]
    summaries = len(records) - len(forwarded)
    bound_lines = OUTPUT_BURST_LINES + OUTPUT_LINES_PER_SECOND * elapsed
    bound_summaries = 2 * (elapsed / SUMMARY_INTERVAL + 2)
    print(f"{len(forwarded)} lines forwarded (bound {bound_lines:.0f}), {summaries} summaries")
    assert len(forwarded) <= bound_lines
    assert summaries <= bound_summaries
    assert all(len(m.encode()) <= MAX_LINE_BYTES for m in forwarded)
