"""The worker's thread pool for sync tools: threads taking jobs from one queue.

``concurrent.futures.ThreadPoolExecutor.submit`` builds a Future (with its condition
and lock), a work item and a ``queue.Queue`` entry for every job: about 8 us a job on
the 2-core machines this project measures on, more than a fast tool itself. A job of
the worker answers its call by itself and needs no Future, so :meth:`ThreadPool.post`
only puts the function on a ``queue.SimpleQueue``. :meth:`ThreadPool.submit` keeps
the Executor interface for the loop's ``run_in_executor`` (generators, sync tools
called as streams).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

__all__ = ["ThreadPool"]

T = TypeVar("T")

_Job = tuple[Callable[..., Any], tuple[Any, ...]]


class ThreadPool(Executor):
    """At most ``threads`` threads, started as jobs need them and kept while the
    process lives (a worker ends with ``os._exit``)."""

    def __init__(self, threads: int, name: str = "tool") -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._max = max(1, threads)
        self._name = name
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a job and not yet promised one
        self._lock = threading.Lock()
        self._shutdown = False

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a pool thread; what it raises is its own business."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot post a job after shutdown")
            if self._idle:
                self._idle -= 1
            elif len(self._threads) < self._max:
                t = threading.Thread(
                    target=self._serve, name=f"{self._name}_{len(self._threads)}", daemon=True
                )
                self._threads.append(t)
                t.start()
        self._jobs.put((fn, args))

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

        self.post(run)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        if wait:
            for t in threads:
                t.join()

    def _serve(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            fn, args = job
            # A job reports its own failures; the thread goes on to the next one.
            with contextlib.suppress(BaseException):
                fn(*args)
            del job, fn, args
            with self._lock:
                self._idle += 1
