"""Many calls' deadlines on one loop timer: expiry in time order, finished calls skipped."""

from __future__ import annotations

import asyncio

from mcphost.sandbox.deadlines import Deadlines


def test_deadlines_expire_in_time_order_and_only_for_calls_still_in_flight() -> None:
    async def scenario() -> list[int]:
        loop = asyncio.get_running_loop()
        live = {1: "a", 2: "b", 3: "c", 4: "d"}
        expired: list[int] = []
        done = loop.create_future()

        def expire(call_id: int) -> None:
            live.pop(call_id)
            expired.append(call_id)
            if call_id == 1:
                done.set_result(None)

        d = Deadlines(loop, live, expire)
        now = loop.time()
        d.add(now + 0.20, 1)
        d.add(now + 0.05, 3)  # earlier than the timer set so far: it moves
        d.add(now + 0.10, 2)
        d.add(now + 0.02, 4)
        del live[2]  # finished before its deadline
        await asyncio.wait_for(done, 5)
        return expired

    assert asyncio.run(scenario()) == [4, 3, 1]


def test_the_heap_is_pruned_of_finished_calls() -> None:
    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        live: dict[int, None] = {}
        d = Deadlines(loop, live, lambda call_id: None)
        for i in range(10_000):
            live[i] = None
            d.add(loop.time() + 60, i)
            del live[i]  # each call finishes at once
        size = len(d._heap)
        d.close()
        return size

    assert asyncio.run(scenario()) <= 1100
