"""How long a batch of ``n`` items takes, learned from the batches that ran.

A batch tool's service time is close to linear in the batch size: a fixed part (the
frame, the call, the tool's own set-up) and a part per item. :class:`LatencyModel`
fits ``a + b·n`` by exponentially weighted least squares (recent batches count most, so
the model follows a replica that slows down), and :meth:`LatencyModel.size_for` picks
the largest batch whose expected time stays within a latency target. On top of the fit,
an additive-increase, multiplicative-decrease cap reacts at once to a batch that broke
the target (the fit needs several batches to move): halve on a miss, grow by one on a
batch that kept it.
"""

from __future__ import annotations

import math

__all__ = ["YIELD_SHARE", "LatencyModel"]

#: While a higher priority level is active, a batch of a lower level carries at most the
#: items whose own time (the per-item part) is this share of a batch of one: a call of
#: the higher level that finds it running waits at most that long behind it.
YIELD_SHARE = 0.5

_INF = math.inf


class LatencyModel:
    """Expected service seconds of a batch of ``n`` items, for one tool on one replica."""

    __slots__ = ("_alpha", "_count", "_n", "_nn", "_nt", "_t", "cap", "max_size")

    def __init__(self, max_size: int, alpha: float = 0.2) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        self._alpha = alpha
        self._n = self._t = self._nn = self._nt = 0.0
        self._count = 0
        #: The AIMD cap on the batch size: halved when a batch misses the target.
        self.cap = max_size
        self.max_size = max_size

    @property
    def observed(self) -> int:
        """Batches seen so far."""
        return self._count

    def observe(self, n: int, seconds: float, target: float | None = None) -> None:
        """A batch of ``n`` items took ``seconds``; ``target`` moves the AIMD cap."""
        # Once per batch and per lone call: the comparison also refuses NaN and inf.
        if n < 1 or not 0.0 <= seconds < _INF:
            return
        count = self._count
        a = self._alpha if count else 1.0
        self._n += a * (n - self._n)
        self._t += a * (seconds - self._t)
        self._nn += a * (n * n - self._nn)
        self._nt += a * (n * seconds - self._nt)
        self._count = count + 1
        if target is not None:
            if seconds > target:
                self.cap = max(1, min(self.cap, n) // 2)
            else:
                self.cap = min(self.max_size, self.cap + 1)

    def coefficients(self) -> tuple[float, float]:
        """``(a, b)`` of ``a + b·n`` (seconds, seconds per item); ``(0, 0)`` unseen."""
        if self._count == 0:
            return 0.0, 0.0
        var = self._nn - self._n * self._n
        if var <= 1e-9 * max(1.0, self._nn):
            # One size seen so far: all of its time is counted per item (the cautious
            # reading: it lets batches grow one step at a time).
            return 0.0, self._t / self._n
        b = (self._nt - self._n * self._t) / var
        if b < 0:  # noise: bigger batches never take less time
            return self._t, 0.0
        a = self._t - b * self._n
        if a < 0:
            return 0.0, self._t / self._n
        return a, b

    def predict(self, n: int) -> float:
        """Expected seconds for a batch of ``n``."""
        a, b = self.coefficients()
        return a + b * n

    def size_for(self, budget: float | None) -> int:
        """The largest batch (at least 1, at most the cap) expected to finish within
        ``budget`` seconds; the cap alone when there is no budget or nothing seen yet."""
        if budget is None or self._count == 0:
            return self.cap
        a, b = self.coefficients()
        if b <= 0:
            return self.cap if a <= budget else 1
        fits = (budget - a) / b
        if fits >= self.cap:  # also an infinite quotient of a tiny per-item time
            return self.cap
        return max(1, math.floor(fits))

    def yield_size(self) -> int:
        """The largest batch a lower priority level may send while a higher one is
        active: its per-item time at most ``YIELD_SHARE`` of a batch of one (1 while
        nothing is known yet, at most the cap). The fit is trusted up to twice the
        sizes it was made from: fitted on small batches only, a line through noise can
        make the per-item time look like nothing."""
        if self._count == 0:
            return 1
        a, b = self.coefficients()
        if b <= 0:  # no per-item time told apart from the noise yet: be cautious
            return 1
        fits = min(YIELD_SHARE * (a + b) / b, 2 * self._n, float(self.cap))
        return max(1, math.floor(fits))
