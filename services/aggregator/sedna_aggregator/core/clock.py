"""The clock port: the session's only source of time, so tests drive deadlines by hand."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "LoopClock", "ManualClock", "Timer"]


class Timer(Protocol):
    """A scheduled callback that can be cancelled (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None:
        """Stop the callback from running; no effect once it ran."""


class Clock(Protocol):
    """Monotonic time in seconds and one-shot timers."""

    def now(self) -> float:
        """Monotonic seconds (only differences matter)."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` (synchronously, on the event loop) after ``delay`` seconds."""


class LoopClock:
    """The running event loop's clock (``loop.time()`` / ``loop.call_later``)."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)


class _ManualTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that moves only when told to: :meth:`advance` runs the timers that fall due.

    Callbacks run synchronously inside :meth:`advance`, in deadline order (ties in the order
    they were scheduled); work they hand to asyncio tasks runs when the caller next awaits.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._seq = itertools.count()
        self._heap: list[tuple[float, int, _ManualTimer, Callable[[], None]]] = []

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = _ManualTimer()
        heapq.heappush(self._heap, (self._now + max(0.0, delay), next(self._seq), timer, callback))
        return timer

    @property
    def pending(self) -> int:
        """Timers scheduled and not cancelled."""
        return sum(1 for _when, _seq, timer, _cb in self._heap if not timer.cancelled)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running every timer due by then."""
        if seconds < 0:
            raise ValueError(f"cannot move a clock backwards ({seconds})")
        target = self._now + seconds
        while self._heap and self._heap[0][0] <= target:
            when, _seq, timer, callback = heapq.heappop(self._heap)
            self._now = max(self._now, when)
            if not timer.cancelled:
                callback()
        self._now = target
