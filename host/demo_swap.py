"""The demo's hot swap: callers keep calling textkit while the CLI swaps it and rolls it back.

The running :class:`Host` follows the registry; ``mcphost plugin swap`` and ``plugin
rollback`` run as their own processes. Every answer says which version gave it (textkit
``NEW_VERSION``'s echo appends ``SUFFIX``), so the switch is seen in the answers; every
failed call is counted, and so is any call that started after a switch and still got the
old version's answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from mcphost.sdk.errors import PluginError

from .home import Home
from .host import Host, HostEvent

if TYPE_CHECKING:
    from .demo import Printer

__all__ = ["CALLERS", "NEW_VERSION", "OLD_VERSION", "SUFFIX", "hot_swap_under_load"]

OLD_VERSION = "1.0.0"
NEW_VERSION = "1.1.0"
#: What textkit NEW_VERSION's echo appends to every answer.
SUFFIX = " [1.1]"
CALLERS = 8
#: Answers to see from each version before moving on.
PHASE_ANSWERS = 300
#: Seconds to wait for the other version to answer after a command.
SWITCH_TIMEOUT = 15.0
#: A caller stops after this many failures (a broken plugin must not spin the demo).
_MAX_FAILURES = 100

Cli = Callable[..., Awaitable[Any]]


class _Answer(NamedTuple):
    started: float
    finished: float
    version: str
    text: str
    answer: str


class _Waiter:
    """Resolves with the first of ``count`` answers by ``version`` finished after ``since``."""

    def __init__(self, version: str, count: int, since: float) -> None:
        self.version = version
        self.left = count
        self.since = since
        self.first: _Answer | None = None
        self.done: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()

    def see(self, a: _Answer) -> None:
        if a.version != self.version or a.finished < self.since or self.done.done():
            return
        self.first = self.first or a
        self.left -= 1
        if self.left <= 0:
            self.done.set_result(self.first)


class _Load:
    """``callers`` tasks calling ``textkit.echo`` back to back until stopped."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.answers: list[_Answer] = []
        self.failures: list[str] = []
        self._waiters: list[_Waiter] = []
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, callers: int) -> None:
        self._tasks = [asyncio.create_task(self._caller(i)) for i in range(callers)]

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(*self._tasks)

    async def _caller(self, i: int) -> None:
        n = 0
        failed = 0
        while not self._stopping and failed < _MAX_FAILURES:
            text = f"c{i}-{n}"
            n += 1
            started = time.perf_counter()
            try:
                answer = await self.host.call("textkit.echo", {"text": text})
            except Exception as exc:
                failed += 1
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            if answer == text:
                version = OLD_VERSION
            elif answer == text + SUFFIX:
                version = NEW_VERSION
            else:
                failed += 1
                self.failures.append(f"unexpected answer {answer!r} to {text!r}")
                continue
            a = _Answer(started, time.perf_counter(), version, text, answer)
            self.answers.append(a)
            for w in self._waiters:
                w.see(a)

    async def wait(self, version: str, count: int, since: float, what: str) -> _Answer:
        """The first of ``count`` answers by ``version`` finished after ``since``."""
        w = _Waiter(version, count, since)
        self._waiters.append(w)
        try:
            return await asyncio.wait_for(asyncio.shield(w.done), SWITCH_TIMEOUT)
        except TimeoutError:
            hint = ""
            if self.failures:
                hint = f"; {len(self.failures)} calls failed, the last: {self.failures[-1]}"
            raise PluginError(
                f"textkit {version} did not answer {count} calls within {SWITCH_TIMEOUT:.0f} s "
                f"{what}{hint}; run `mcphost -v demo` to see the host's log"
            ) from None
        finally:
            self._waiters.remove(w)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def _switch(
    p: Printer, load: _Load, cli: Cli, home: Home, args: list[str], to: str
) -> dict[str, float]:
    """Run one switching command under load; wait until ``to`` answers, then for a
    phase's worth of its answers. Returns the command's and the switch's durations."""
    t0 = time.perf_counter()
    res = await cli(home, "plugin", *args, "--reason", f"mcphost demo: {args[0]} under load")
    t_exit = time.perf_counter()
    p.line(
        f"$ mcphost plugin {' '.join(args)}  -> {res['plugin']}: {res['from']} -> {res['to']}"
        f"  [{_ms(t_exit - t0)}]"
    )
    first = await load.wait(to, 1, t0, f"after `mcphost plugin {' '.join(args)}`")
    p.line(
        f"textkit {to} answered {_ms(first.finished - t0)} after the command started "
        f"({_ms(max(0.0, first.finished - t_exit))} after it returned): "
        f"{first.text!r} -> {first.answer!r}"
    )
    await load.wait(to, PHASE_ANSWERS, first.finished, f"after switching to {to}")
    return {"command_s": t_exit - t0, "switch_s": first.finished - t0}


def _phases(answers: list[_Answer], switches: list[tuple[float, str]]) -> tuple[list[int], int]:
    """Answers per phase (split at the host's switches, by when each call started), and
    how many calls started after a switch got another version's answer."""
    bounds = [t for t, _ in switches]
    expected = [OLD_VERSION, *(v for _, v in switches)]
    counts = [0] * len(expected)
    stale = 0
    for a in answers:
        phase = sum(1 for b in bounds if a.started > b)
        counts[phase] += 1
        if phase > 0 and a.version != expected[phase]:
            stale += 1
    return counts, stale


async def hot_swap_under_load(p: Printer, host: Host, home: Home, cli: Cli) -> dict[str, Any]:
    """Swap textkit to NEW_VERSION and roll it back with the CLI while callers keep
    calling; print what happened and return the figures."""
    p.step(f"hot swap under load: {CALLERS} callers keep calling textkit.echo")
    switches: list[tuple[float, str]] = []

    def on_event(ev: HostEvent) -> None:
        if ev.kind == "plugin_swapped" and ev.plugin == "textkit":
            switches.append((time.perf_counter(), ev.version))

    remove_listener = host.add_listener(on_event)
    load = _Load(host)
    t0 = time.perf_counter()
    load.start(CALLERS)
    try:
        first = await load.wait(OLD_VERSION, PHASE_ANSWERS, t0, "before the swap")
        p.line(f"textkit {OLD_VERSION} answers {first.text!r} -> {first.answer!r}")
        swap = await _switch(p, load, cli, home, ["swap", "textkit", NEW_VERSION], NEW_VERSION)
        back = await _switch(p, load, cli, home, ["rollback", "textkit"], OLD_VERSION)
    finally:
        await load.stop()
        remove_listener()
    elapsed = time.perf_counter() - t0
    counts, stale = _phases(load.answers, switches)
    calls = len(load.answers) + len(load.failures)
    failed = len(load.failures)
    names = [OLD_VERSION, *(v for _, v in switches)]
    p.line(
        f"{calls:,} calls in {elapsed:.1f} s: "
        + ", then ".join(f"{n:,} answered by {v}" for n, v in zip(counts, names, strict=True))
    )
    p.line(f"failed calls: {failed}; answers from the old version after a switch: {stale}")
    for f in load.failures[:3]:
        p.line(f"  failed: {f}")
    return {
        "callers": CALLERS,
        "calls": calls,
        "failed": failed,
        "stale": stale,
        "switches": len(switches),
        "swap_s": swap["switch_s"],
        "swap_command_s": swap["command_s"],
        "rollback_s": back["switch_s"],
        "rollback_command_s": back["command_s"],
    }
