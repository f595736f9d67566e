"""mathkit: statistics, primes, busy work for benchmarks, and a batch tool."""

from __future__ import annotations

import math
import statistics
import time

import msgspec

from mcphost.sdk import Context, Plugin, ToolError

__version__ = "1.0.0"

plugin = Plugin("mathkit", description="Math and statistics tools")


class Summary(msgspec.Struct):
    """Descriptive statistics of a list of numbers."""

    count: int
    mean: float
    median: float
    stdev: float
    minimum: float
    maximum: float


@plugin.tool
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@plugin.tool
def square(x: float) -> float:
    """The square of a number."""
    return x * x


@plugin.tool
def total(values: list[float]) -> float:
    """The sum of the values."""
    return math.fsum(values)


_FAILED: dict[str, int] = {}


@plugin.tool
def flaky(key: str, failures: int, code: str = "flaky") -> int:
    """Fail with ``code`` on the first ``failures`` calls with this key, then succeed
    (for retries and fallbacks); returns the number of the call that succeeded."""
    seen = _FAILED.get(key, 0) + 1
    _FAILED[key] = seen
    if seen <= failures:
        raise ToolError(f"call {seen} of {key!r} fails on purpose", code=code)
    return seen


@plugin.tool
def stats(values: list[float]) -> Summary:
    """Mean, median, standard deviation, minimum and maximum of the values."""
    if not values:
        raise ToolError("stats needs at least one value", code="empty_input")
    return Summary(
        count=len(values),
        mean=statistics.fmean(values),
        median=statistics.median(values),
        stdev=statistics.stdev(values) if len(values) > 1 else 0.0,
        minimum=min(values),
        maximum=max(values),
    )


@plugin.tool
def is_prime(n: int) -> bool:
    """Whether n is a prime number."""
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


@plugin.tool(batch=True)
def factorize(numbers: list[int]) -> list[list[int]]:
    """Prime factors of each number; takes a list so calls can be batched."""
    out: list[list[int]] = []
    for n in numbers:
        factors: list[int] = []
        d = 2
        while d * d <= n:
            while n % d == 0:
                factors.append(d)
                n //= d
            d += 1
        if n > 1:
            factors.append(n)
        out.append(factors)
    return out


@plugin.tool
def spin(microseconds: int) -> int:
    """Burn CPU for about the given time and return it (for overhead benchmarks)."""
    if microseconds <= 0:
        return 0
    end = time.perf_counter() + microseconds / 1e6
    while time.perf_counter() < end:
        pass
    return microseconds


@plugin.tool
def primes_below(limit: int, ctx: Context) -> list[int]:
    """All primes below the limit (sieve), with progress; refuses limits over 10^7."""
    if limit > 10_000_000:
        raise ToolError(
            f"limit {limit} is too large; use at most 10000000",
            code="too_large",
            data={"limit": limit, "max": 10_000_000},
        )
    sieve = bytearray([1]) * max(limit, 0)
    sieve[0:2] = b"\x00\x00"[: min(2, limit)]
    for i in range(2, math.isqrt(max(limit, 1)) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(range(i * i, limit, i)))
        ctx.check_cancelled()
    ctx.progress(1, 1)
    return [i for i, flag in enumerate(sieve) if flag]
