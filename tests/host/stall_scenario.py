"""Run a host with real bubblewrap jails in a fresh process and report, as JSON, the
event loop's longest stall (the largest gap between 1 ms sleeps of a ticker task) while
it starts, swaps a version, and restarts a crashed worker.

A fresh process: the sandbox probe that a host's first start runs is measured too.
``python stall_scenario.py WORKDIR``
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

from mcphost.host import Host, HostConfig, PluginSource

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: tests/
from support.procs import wait_process_gone

PLUGIN = """
from mcphost.sdk import Plugin

plugin = Plugin("stall")


@plugin.tool
def version() -> str:
    return {version!r}
"""

#: Files in the plugin's data directory: a worker start hands them to the worker's uid.
DATA_FILES = 20_000


def write_plugin_source(root: Path, version: str) -> PluginSource:
    code = root / f"stall-{version}"
    code.mkdir(parents=True)
    (code / "stall.py").write_text(textwrap.dedent(PLUGIN.format(version=version)))
    return PluginSource(
        name="stall",
        version=version,
        entry="stall:plugin",
        paths=[str(code)],
        origin="directory",
        root=str(code),
    )


class Ticker:
    """Sleeps 1 ms at a time and keeps the largest gap between two wake-ups; and keeps
    the longest single step of the loop (one callback or task step, timed around
    ``Handle._run``): a gap also grows while the process waits for a CPU on a loaded
    machine, a step only while the loop itself is busy or blocked."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.step = 0.0
        run = asyncio.events.Handle._run
        clock = time.perf_counter

        def timed(handle: asyncio.events.Handle) -> None:
            t0 = clock()
            try:
                run(handle)
            finally:
                self.step = max(self.step, clock() - t0)

        asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0.001)
            now = loop.time()
            self.longest = max(self.longest, now - last)
            last = now

    def take(self) -> dict[str, float]:
        """The longest gap (the sleep excluded) and step since the last take, in ms."""
        longest, self.longest = self.longest, 0.0
        step, self.step = self.step, 0.0
        return {"gap": round(max(0.0, longest - 0.001) * 1000, 1), "step": round(step * 1000, 1)}


async def scenario(work: Path) -> dict[str, dict[str, float]]:
    home = work / "home"
    data = home / "data" / "stall"
    data.mkdir(parents=True)
    for i in range(DATA_FILES):
        (data / f"f{i}").touch()
    old, new = write_plugin_source(work, "1.0.0"), write_plugin_source(work, "2.0.0")
    config = HostConfig(
        allow_unsigned=True, isolation="bwrap", require_namespaces=True, backoff_initial=0.05
    )
    ticker = Ticker()
    tick = asyncio.ensure_future(ticker.run())
    await asyncio.sleep(0.01)
    ticker.take()
    stalls: dict[str, dict[str, float]] = {}
    host = Host(home, config=config, sources=[old], environment=False, registry=False)
    try:
        await host.start()  # learns the tools: one jailed worker start
        assert await host.call("stall.version") == "1.0.0"
        stalls["start"] = ticker.take()

        (stats,) = host.stats()
        assert await host.activate(new) == "1.0.0"
        assert await host.call("stall.version") == "2.0.0"
        await wait_process_gone(stats["pid"], 20)
        stalls["swap"] = ticker.take()

        (stats,) = host.stats()
        os.kill(stats["pid"], signal.SIGKILL)
        await wait_process_gone(stats["pid"], 20)
        # The worker inside the jail dies a moment after bubblewrap (its init's
        # parent-death signal): until then it may still answer. Call until the
        # restarted worker does.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if await host.call("stall.version") == "2.0.0" and host.stats()[0]["restarts"]:
                    break
            except Exception:
                pass
            await asyncio.sleep(0.01)
        (after,) = host.stats()
        assert after["pid"] not in (None, stats["pid"]) and after["restarts"] == 1, after
        stalls["crash"] = ticker.take()
    finally:
        await host.close()
        stalls["close"] = ticker.take()
        tick.cancel()
    return stalls


if __name__ == "__main__":
    print(json.dumps(asyncio.run(scenario(Path(sys.argv[1])))))
