"""Exponential backoff with full jitter for reconnects."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays ``uniform(0, min(cap, initial * 2**n))`` for the n-th consecutive failure.

    Parameters
    ----------
    initial
        Upper bound of the first delay, seconds.
    maximum
        Cap of the delay, seconds.
    rng
        Random source (seeded in tests).
    """

    def __init__(
        self, initial: float = 0.2, maximum: float = 10.0, rng: random.Random | None = None
    ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"backoff needs 0 < initial <= maximum, got {initial}, {maximum}")
        self.initial = initial
        self.maximum = maximum
        self._rng = rng or random.Random()
        self._failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        bound = min(self.maximum, self.initial * 2.0 ** min(self._failures, 30))
        self._failures += 1
        return self._rng.uniform(0, bound)

    def reset(self) -> None:
        """Forget failures (after a successful connection)."""
        self._failures = 0
