"""An asyncio work queue with the semantics of client-go's rate-limited ``workqueue``.

- A key added many times while it waits is processed once (the queue holds a *set*).
- A key is never handed to two workers at once: re-added while being processed, it is queued
  again when the worker calls :meth:`WorkQueue.done`, and processed once more.
- :meth:`WorkQueue.add_after` delays an add (the earliest pending delay wins);
  :meth:`WorkQueue.add_rate_limited` delays by the rate limiter; :meth:`WorkQueue.forget` resets
  the key's backoff.
- :meth:`WorkQueue.shutdown` stops accepting keys; workers still get what is queued, then
  :class:`QueueShutDown`. :meth:`WorkQueue.shutdown_with_drain` also waits until every key
  handed out is done.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from sedna_gm.controllers.metrics import ControllerMetrics
from sedna_gm.controllers.ratelimit import RateLimiter, default_controller_rate_limiter

__all__ = ["QueueShutDown", "WorkQueue"]

K = TypeVar("K", bound=Hashable)


class QueueShutDown(Exception):  # noqa: N818 - named after the state, like asyncio.QueueShutDown
    """The queue is shut down and empty: the worker should exit."""


class WorkQueue(Generic[K]):
    """Deduplicating, rate-limited, delaying work queue (see the module docstring).

    Parameters
    ----------
    name
        Controller name, used as the metrics label.
    rate_limiter
        Delays for :meth:`add_rate_limited`; default: 5 ms..300 s per key, max'ed with
        10 qps / burst 100 overall.
    metrics
        Where to report depth, adds and retries; None for no metrics.
    """

    def __init__(
        self,
        name: str = "",
        rate_limiter: RateLimiter | None = None,
        metrics: ControllerMetrics | None = None,
    ) -> None:
        self.name = name
        self._limiter = rate_limiter or default_controller_rate_limiter()
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._delayed: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        self._shutting_down = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._depth = metrics.queue_depth.labels(name) if metrics else None
        self._adds = metrics.queue_adds.labels(name) if metrics else None
        self._retries = metrics.queue_retries.labels(name) if metrics else None

    def __len__(self) -> int:
        """Number of keys waiting (not counting delayed or in-process ones)."""
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        """True once :meth:`shutdown` was called."""
        return self._shutting_down

    def processing(self) -> frozenset[K]:
        """Keys handed to workers and not yet done."""
        return frozenset(self._processing)

    def add(self, key: K) -> None:
        """Queue ``key`` unless it is already waiting; ignored after shutdown."""
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if self._adds is not None:
            self._adds.inc()
        if key in self._processing:
            # Requeued by done(): one worker at a time per key.
            return
        self._push(key)

    def _push(self, key: K) -> None:
        self._queue.append(key)
        self._idle.clear()
        self._update_depth()
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _update_depth(self) -> None:
        if self._depth is not None:
            self._depth.set(len(self._queue))

    def add_after(self, key: K, delay: float) -> None:
        """Queue ``key`` after ``delay`` seconds (at once when ``delay <= 0``).

        A key with a pending delayed add keeps the earlier of the two deadlines.
        """
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        ready_at = loop.time() + delay
        pending = self._delayed.get(key)
        if pending is not None:
            if pending[0] <= ready_at:
                return
            pending[1].cancel()
        handle = loop.call_at(ready_at, self._fire_delayed, key)
        self._delayed[key] = (ready_at, handle)

    def _fire_delayed(self, key: K) -> None:
        self._delayed.pop(key, None)
        self.add(key)

    def add_rate_limited(self, key: K) -> None:
        """Queue ``key`` after the rate limiter's delay (counts a retry)."""
        if self._shutting_down:
            return
        if self._retries is not None:
            self._retries.inc()
        self.add_after(key, self._limiter.when(key))

    def forget(self, key: K) -> None:
        """Reset the rate limiter's memory of ``key`` (call after a successful reconcile)."""
        self._limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        """Rate-limited adds of ``key`` since it was last forgotten."""
        return self._limiter.num_requeues(key)

    async def get(self) -> K:
        """Wait for a key and mark it as processing; call :meth:`done` with it afterwards.

        Raises
        ------
        QueueShutDown
            The queue was shut down and nothing is left in it.
        """
        while not self._queue:
            if self._shutting_down:
                raise QueueShutDown(f"work queue {self.name!r} is shut down")
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # A wake-up given to a cancelled getter must not be lost.
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()
                raise
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        self._update_depth()
        return key

    def done(self, key: K) -> None:
        """Mark ``key`` as processed; if it was re-added meanwhile, queue it again."""
        self._processing.discard(key)
        if key in self._dirty:
            self._push(key)
        elif not self._processing and not self._queue:
            self._idle.set()

    def shutdown(self) -> None:
        """Stop accepting keys and drop pending delayed adds; wake idle workers."""
        self._shutting_down = True
        for _, handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def shutdown_with_drain(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Shut down, then wait until queued and in-process keys are done.

        Parameters
        ----------
        timeout
            Longest wait in seconds; None waits forever.

        Returns
        -------
        bool
            True when drained, False when the timeout passed first.
        """
        self.shutdown()
        if not self._queue and not self._processing:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True
