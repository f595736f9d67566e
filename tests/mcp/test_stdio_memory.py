"""``mcphost serve``'s memory stays flat whatever the client and the plugins do: a
client that reads nothing while calls flood it with progress and log lines, and a
plugin that prints hundreds of megabytes. Each test measures the real serve process."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from support.raw_stdio import RawStdio

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "silent", "version": "0"},
    },
}


def request(rid: int, method: str, params: dict[str, Any]) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}).encode()


def call(rid: int, name: str, args: dict[str, Any], token: str | None = None) -> bytes:
    params: dict[str, Any] = {"name": name, "arguments": args}
    if token is not None:
        params["_meta"] = {"progressToken": token}
    return request(rid, "tools/call", params)


class PeakRss:
    """Samples a process's resident memory in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def serve_chatty(mcphost_cmd: list[str], home: Path, chatty_dir: Path) -> RawStdio:
    # A worker busy flooding may answer the health-check ping late on a loaded machine;
    # these tests are about memory, so it is given time rather than restarted.
    config = home / "config.toml"
    config.write_text(config.read_text() + "ping_timeout = 120\n")
    argv = [*mcphost_cmd, "--home", str(home), "serve", "--no-environment"]
    return RawStdio([*argv, "--plugin-dir", str(chatty_dir), "--forward-plugin-logs"])


def started(serve: RawStdio) -> None:
    """Initialize and make one call, so the host and the plugin's worker are running."""
    serve.send_lines(
        json.dumps(INIT).encode(),
        b'{"jsonrpc": "2.0", "method": "notifications/initialized"}',
        request(2, "logging/setLevel", {"level": "debug"}),
        call(3, "textkit.upper", {"text": "warm"}),
    )
    serve.read_until_answered({1, 2, 3})


#: How much the serve process may grow while a client reads nothing (MB).
SILENT_BOUND_MB = 60


def test_a_client_that_reads_nothing_while_calls_flood_it_costs_bounded_memory(
    mcphost_cmd: list[str], mcp_home: Path, chatty_dir: Path
) -> None:
    n = 300_000
    done = mcp_home / "data" / "textkit"
    serve = serve_chatty(mcphost_cmd, mcp_home, chatty_dir)
    try:
        started(serve)
        rss = PeakRss(serve.proc.pid)
        base = rss.peak
        # Progress, log lines of the calls, and printed lines: none of them is read.
        serve.send_lines(
            call(10, "textkit.progress_flood", {"steps": n}, token="p"),
            call(11, "textkit.chatter", {"lines": n}),
            call(12, "textkit.shout", {"lines": n}),
        )
        deadline = time.monotonic() + 90
        while not all((done / f"done-{t}").exists() for t in ("progress", "chatter", "shout")):
            grew = (rss.peak - base) / 2**20
            assert grew < SILENT_BOUND_MB, f"serve grew by {grew:.0f} MB"
            assert time.monotonic() < deadline, f"the flood did not end: {sorted(os.listdir(done))}"
            time.sleep(0.05)
        grew = (rss.stop() - base) / 2**20
        print(f"serve grew by {grew:.1f} MB (bound {SILENT_BOUND_MB} MB) while not read")
        assert grew < SILENT_BOUND_MB
        # Nothing was lost that mattered: every answer arrives, and a notice says what
        # was dropped.
        seen = serve.read_until_answered({10, 11, 12})
        answers = {m["id"]: m for m in seen if "id" in m}
        assert answers[10]["result"]["structuredContent"] == {"result": n}
        assert answers[11]["result"]["structuredContent"] == {"result": n}
        assert answers[12]["result"]["structuredContent"] == {"result": n}
        notices = [
            m["params"]["data"]
            for m in seen
            if m.get("method") == "notifications/message" and m["params"]["logger"] == "mcphost"
        ]
        assert notices and all("dropped" in text for text in notices)
    finally:
        serve.close(timeout=30)


#: How much the serve process may grow while a plugin prints (MB).
FLOOD_BOUND_MB = 60


def test_a_plugin_printing_hundreds_of_megabytes_costs_bounded_memory_and_log_events(
    mcphost_cmd: list[str], mcp_home: Path, chatty_dir: Path
) -> None:
    lines, width = 2_000_000, 150  # 300 MB on the plugin's stdout
    serve = serve_chatty(mcphost_cmd, mcp_home, chatty_dir)
    try:
        started(serve)
        rss = PeakRss(serve.proc.pid)
        base = rss.peak
        t0 = time.monotonic()
        serve.send_lines(call(10, "textkit.shout", {"lines": lines, "width": width}))
        # A fast reader: everything serve writes is read at once.
        seen = serve.read_until_answered({10})
        assert (mcp_home / "data" / "textkit" / "done-shout").exists()
        # What did not fit is counted in a record that follows within about a second.
        while not any("dropped" in str(m.get("params", {}).get("data")) for m in seen):
            seen.append(serve.read(timeout=30))
        serve.send_lines(call(11, "textkit.upper", {"text": "after"}))
        seen += serve.read_until_answered({11})
        elapsed = time.monotonic() - t0
        grew = (rss.stop() - base) / 2**20
        logs = [m for m in seen if m.get("method") == "notifications/message"]
        print(f"{len(logs)} log events in {elapsed:.1f}s; serve grew by {grew:.1f} MB")
        assert grew < FLOOD_BOUND_MB, f"serve grew by {grew:.1f} MB (bound {FLOOD_BOUND_MB})"
        # The per-plugin budget: a burst of 200 lines, 50 a second, one summary a second.
        bound = 200 + 50 * elapsed + 2 * (elapsed + 2)
        assert len(logs) <= bound, f"{len(logs)} log events (bound {bound:.0f})"
    finally:
        serve.close(timeout=30)
