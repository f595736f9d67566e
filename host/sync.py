"""A small synchronous facade over :class:`Host` for scripts and REPLs."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from mcphost.sandbox.loops import loop_factory

from .host import Host, HostEvent, ToolInfo

__all__ = ["SyncHost"]

T = TypeVar("T")
_DONE = object()


class SyncHost:
    """Runs a :class:`Host` on a private event loop thread.

    >>> with SyncHost() as host:
    ...     host.call("textkit.upper", {"text": "hi"})
    'HI'
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Its own loop, in its own thread: of the kind mcphost runs (uvloop by default).
        self._loop = loop_factory()()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mcphost", daemon=True)
        self._thread.start()
        self.host = self._run(self._make(args, kwargs))

    async def _make(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Host:
        return Host(*args, **kwargs)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> SyncHost:
        self._run(self.host.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self.host.close())
        # Threads the host handed work to (reads, verification) end before the loop
        # does: closing a loop does not wait for its executor.
        self._run(self._loop.shutdown_default_executor())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _read(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on the host's loop: the host's state belongs to that thread."""

        async def read() -> T:
            return fn()

        return self._run(read())

    def add_listener(self, listener: Callable[[HostEvent], None]) -> Callable[[], None]:
        """Call ``listener`` with every :class:`HostEvent`, on the host's loop thread;
        returns a function to remove it."""
        remove = self._read(lambda: self.host.add_listener(listener))
        return lambda: self._read(remove)

    def tools(self) -> list[ToolInfo]:
        return self._read(self.host.tools)

    def call(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        priority: int | None = None,
    ) -> Any:
        """As :meth:`Host.call`: ``priority`` from 0 (the highest) to 100."""
        return self._run(self.host.call(name, args, timeout=timeout, priority=priority))

    def stream(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        window: int | None = None,
        priority: int | None = None,
        limits: dict[str, Any] | None = None,
    ) -> Iterator[Any]:
        """Iterate a streaming tool's items (the stream keeps its backpressure); the
        keywords are :meth:`Host.stream`'s (admission priority, per-stream limits).

        The next item is asked for only when the caller comes back for it; leaving the
        loop early cancels the stream in its worker. No thread ever waits on the caller.
        """
        items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        wanted = asyncio.Event()

        async def pump() -> None:
            try:
                async for item in self.host.stream(
                    name, args, timeout=timeout, window=window, priority=priority, limits=limits
                ):
                    items.put(item)
                    await wanted.wait()
                    wanted.clear()
                items.put(_DONE)
            except asyncio.CancelledError:
                raise  # the caller left the loop: nobody reads on
            except BaseException as exc:
                items.put(exc)

        fut = asyncio.run_coroutine_threadsafe(pump(), self._loop)
        try:
            while True:
                item = items.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
                self._loop.call_soon_threadsafe(wanted.set)
        finally:
            fut.cancel()

    def stats(self) -> list[dict[str, Any]]:
        return self._read(self.host.stats)

    # -- resources, prompts, completions (see Host) ----------------------------------
    def list_resources(self) -> list[dict[str, Any]]:
        return self._run(self.host.list_resources())

    def list_resource_templates(self) -> list[dict[str, Any]]:
        return self._run(self.host.list_resource_templates())

    def read_resource(self, uri: str, *, timeout: float | None = None) -> dict[str, Any]:
        return self._run(self.host.read_resource(uri, timeout=timeout))

    def list_prompts(self) -> list[dict[str, Any]]:
        return self._run(self.host.list_prompts())

    def get_prompt(
        self, name: str, arguments: dict[str, str] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        return self._run(self.host.get_prompt(name, arguments, timeout=timeout))

    def complete(
        self,
        ref: dict[str, Any],
        argument: dict[str, Any],
        context: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        return self._run(self.host.complete(ref, argument, context, timeout=timeout))
