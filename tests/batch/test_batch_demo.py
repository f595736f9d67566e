"""The batching act of ``mcphost demo`` (host/demo_batch.py) on a host with the example
mathkit: what it prints, and that it leaves the settings as it found them. (The whole
demo runs in tests/host/test_demo.py, which checks these lines in its output too.)"""

from __future__ import annotations

import re
from pathlib import Path

from mcphost.host import Host, HostConfig
from mcphost.host.demo import Printer, ms
from mcphost.host.demo_batch import batching_act


async def test_the_demo_act_compares_batching_off_and_on_and_a_call_overtakes_a_queue(
    tmp_path: Path, plugin_dirs: dict[str, Path]
) -> None:
    lines: list[str] = []
    config = HostConfig(allow_unsigned=True, isolation="rlimits")
    async with Host(
        tmp_path / "home",
        config=config,
        plugin_dirs=[plugin_dirs["mathkit"]],
        environment=False,
        registry=False,
    ) as host:
        figures = await batching_act(Printer(lines.append), host, ms)
        after = host.config
    out = "\n".join(lines)
    assert "== batching: 64 concurrent callers of mathkit.factorize, one number per call" in out
    assert re.search(r"batching off: +[\d,]+ calls/s, p99 [\d.]+ ms; one worker call each", out)
    m = re.search(
        r"batching on: +[\d,]+ calls/s, p99 [\d.]+ ms; [\d,]+ batch calls of up to (\d+) "
        r"\(mean [\d.]+\)",
        out,
    )
    assert m and int(m[1]) > 1 and int(m[1]) == figures["largest_batch"]
    assert re.search(r"[\d.]+x the calls/s with batching on; every caller got the same", out)
    assert figures["same_answers"] is True
    assert "12 calls at priority 2 queue behind a running batch, then one at priority 0" in out
    assert "before 12 of the 12 priority-2 calls queued ahead of it" in out
    assert "answer order: running, high, 12 low" in out
    assert after == config  # the live changes went back
