"""A host that follows its registry reads it in threads; closing the host waits for the
read under way before it closes the database (a connection closed under a read in
another thread crashed the process)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from support.cli import run_mcphost

from mcphost.host import Home, Host
from mcphost.host.registry_link import _Follower


def test_a_host_closed_while_it_polls_its_registry_closes_the_database_only_after_the_poll(
    home: Home, wheels: dict[str, Path]
) -> None:
    proc = run_mcphost("plugin", "install", str(wheels["1.0"]), "--yes", home=home)
    assert proc.returncode == 0, proc.stderr
    entered, gate = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}
    poll = _Follower.poll.__code__

    def hold_a_poll(frame: FrameType, event: str, arg: Any) -> None:
        """Holds the first poll made once the database is open (a poll in its thread)
        until the test lets it go, then notes whether the database was still open."""
        if event != "call" or frame.f_code is not poll or entered.is_set():
            return
        follower = frame.f_locals["self"]
        if follower.reg is None:
            return
        entered.set()
        gate.wait(30)
        try:
            seen["open"] = follower.reg.conn.total_changes >= 0
        except sqlite3.ProgrammingError:  # "Cannot operate on a closed database."
            seen["open"] = False

    async def scenario() -> bool:
        host = Host(home, environment=False)
        await host.start()
        assert await asyncio.to_thread(entered.wait, 30), "the host never polled"
        closing = asyncio.ensure_future(host.close())
        # The poll is held: a close that does not wait for it finishes meanwhile.
        done, _ = await asyncio.wait([closing], timeout=2)
        gate.set()
        await asyncio.wait_for(closing, 30)
        return bool(done)

    threading.settrace(hold_a_poll)  # threads started from now on: the loop's executor
    try:
        closed_before_the_poll_ended = asyncio.run(scenario())
    finally:
        threading.settrace(None)
        gate.set()
    assert seen == {"open": True}, "the database was closed under a read in a thread"
    assert not closed_before_the_poll_ended
