"""Rate limiters for the work queue, with client-go's ``workqueue`` semantics.

A rate limiter answers "how long must this key wait before it is retried?". The controller
default combines a per-key exponential backoff (a failing object backs off on its own) with a
global token bucket (a storm of failures across many objects cannot hammer the store).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Protocol

__all__ = [
    "BucketRateLimiter",
    "ExponentialBackoffRateLimiter",
    "MaxOfRateLimiter",
    "RateLimiter",
    "default_controller_rate_limiter",
]


class RateLimiter(Protocol):
    """Decides retry delays per key."""

    def when(self, key: Hashable) -> float:
        """Return the delay in seconds before ``key`` may be processed again (counts a retry)."""
        ...

    def forget(self, key: Hashable) -> None:
        """Stop tracking ``key`` (it succeeded): its next failure starts from the base delay."""
        ...

    def num_requeues(self, key: Hashable) -> int:
        """How many times ``key`` was rate limited since it was last forgotten."""
        ...


class ExponentialBackoffRateLimiter:
    """Per-key exponential backoff: ``base * 2**failures``, capped.

    Parameters
    ----------
    base
        First delay in seconds (client-go: 5 ms).
    cap
        Largest delay in seconds (client-go: 1000 s; Sedna's default 300 s).
    """

    def __init__(self, base: float = 0.005, cap: float = 300.0) -> None:
        if base <= 0:
            raise ValueError(f"base must be > 0 seconds, got {base!r}")
        if cap < base:
            raise ValueError(f"cap ({cap!r}) must be >= base ({base!r})")
        self._base = base
        self._cap = cap
        self._failures: dict[Hashable, int] = {}

    def when(self, key: Hashable) -> float:
        """Return the backoff for ``key`` and count one more failure."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        # Beyond ~64 doublings the float overflows long before the cap matters: clamp early.
        if failures >= 64:
            return self._cap
        return float(min(self._base * (2**failures), self._cap))

    def forget(self, key: Hashable) -> None:
        """Reset the backoff of ``key``."""
        self._failures.pop(key, None)

    def num_requeues(self, key: Hashable) -> int:
        """Failures counted for ``key``."""
        return self._failures.get(key, 0)


class BucketRateLimiter:
    """A global token bucket (``golang.org/x/time/rate`` reservation semantics).

    Each call to :meth:`when` reserves one token; when the bucket is empty the reservation is
    in the future and the returned delay says how far.

    Parameters
    ----------
    qps
        Refill rate in tokens per second.
    burst
        Bucket size (tokens available at once).
    clock
        Monotonic clock in seconds (tests inject a fake one).
    """

    def __init__(
        self, qps: float = 10.0, burst: int = 100, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if qps <= 0:
            raise ValueError(f"qps must be > 0, got {qps!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        self._qps = qps
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def when(self, key: Hashable) -> float:
        """Reserve a token and return how long to wait for it."""
        now = self._clock()
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._qps) - 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self._qps

    def forget(self, key: Hashable) -> None:
        """Nothing to forget: the bucket is global."""

    def num_requeues(self, key: Hashable) -> int:
        """Always 0: the bucket does not count per key."""
        return 0


class MaxOfRateLimiter:
    """Combines limiters: the delay is the largest of theirs; forget/requeues go to all."""

    def __init__(self, *limiters: RateLimiter) -> None:
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self._limiters = limiters

    def when(self, key: Hashable) -> float:
        """Largest delay of all limiters (each one counts the retry)."""
        return max(limiter.when(key) for limiter in self._limiters)

    def forget(self, key: Hashable) -> None:
        """Forget ``key`` in every limiter."""
        for limiter in self._limiters:
            limiter.forget(key)

    def num_requeues(self, key: Hashable) -> int:
        """Largest count of all limiters."""
        return max(limiter.num_requeues(key) for limiter in self._limiters)


def default_controller_rate_limiter(
    *,
    base: float = 0.005,
    cap: float = 300.0,
    qps: float = 10.0,
    burst: int = 100,
    clock: Callable[[], float] = time.monotonic,
) -> MaxOfRateLimiter:
    """client-go's ``DefaultControllerRateLimiter`` with Sedna's 300 s cap.

    Returns
    -------
    MaxOfRateLimiter
        Per-key exponential backoff (``base``..``cap``) combined with a token bucket
        (``qps``, ``burst``).
    """
    return MaxOfRateLimiter(
        ExponentialBackoffRateLimiter(base, cap), BucketRateLimiter(qps, burst, clock)
    )
