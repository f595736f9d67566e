"""The worker's thread pool: jobs side by side up to its size, futures for submit."""

from __future__ import annotations

import threading

import pytest

from mcphost.sandbox.pool import ThreadPool


def test_jobs_run_side_by_side_on_at_most_the_pool_size_of_threads() -> None:
    pool = ThreadPool(3, "t")
    names: set[str] = set()
    running = 0
    most = 0
    lock = threading.Lock()
    done = threading.Semaphore(0)
    # Each job waits until three run at once: nine jobs pass only if the pool runs three
    # side by side, and a fourth thread would show in ``most``.
    together = threading.Barrier(3)

    def job() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            names.add(threading.current_thread().name)
        together.wait(timeout=20)
        with lock:
            running -= 1
        done.release()

    for _ in range(9):
        pool.post(job)
    for _ in range(9):
        assert done.acquire(timeout=20)
    pool.shutdown()
    assert most == 3
    assert names == {"t_0", "t_1", "t_2"}


def test_submit_gives_a_future_with_the_result_or_the_exception() -> None:
    pool = ThreadPool(2)
    assert pool.submit(lambda a, b: a + b, 2, b=3).result(timeout=5) == 5

    def fail() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        pool.submit(fail).result(timeout=5)
    # A job that raises does not take its thread down.
    assert pool.submit(lambda: "still here").result(timeout=5) == "still here"
    pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.post(print)
