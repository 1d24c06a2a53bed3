"""Dynamic batching: one queue and one worker per model.

Adaptive batching: the worker never waits for a batch to fill on the off chance that more
requests come. When it is idle and a request arrives, it lets the event loop run the
handlers that are already runnable (one loop turn), takes the queued requests with the
same batch key (same input datatypes and the same shapes past the batch dimension), up to
``max_batch_size``, and runs them at once. While a batch runs, new requests queue up, and
the next batch takes them all: under load, batches form by themselves, and a lone request
is never delayed. ``max_queue_delay_ms`` only bounds the extra wait for requests that are
*known* to be on their way: announced with :meth:`DynamicBatcher.arriving` (a caller that
has accepted a request and is still preparing it) but not queued yet.

The batch runs as one backend call on the model's own worker thread (one single-thread
executor per model, so calls never overlap); the inputs are concatenated and the outputs
split back along axis 0 in that thread too, off the event loop.

Short calls skip the queue and the thread hop: when ``inline_compute_ms`` > 0, the model
is idle (nothing queued or running) and its recent single-request calls took at most that
long (a moving average, first learned on the worker thread), a request runs at once on
the event loop, in the caller's task. The hop (a thread wake-up there and back) and the
loop turn that gathers a batch cost ~0.2-0.3 ms, as much as a small model's compute;
blocking the loop for a call that short delays others by less than that call would have,
and requests arriving meanwhile queue up and form the next batch on the worker thread.
A longer call always goes to the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Hashable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from sedna.serving.backend import Backend
from sedna.serving.errors import BackendError, ModelNotReadyError
from sedna.serving.metrics import InferenceMetrics

__all__ = ["DynamicBatcher", "Tensors", "batch_key"]

_log = logging.getLogger(__name__)

Tensors = dict[str, npt.NDArray[np.generic]]
"""Tensors by name."""

_SOLO_SMOOTHING: Final = 0.2
"""Weight of the newest single-request call in the moving average of their durations."""


def batch_key(inputs: Mapping[str, npt.NDArray[np.generic]]) -> Hashable | None:
    """The key requests must share to be batched together, or ``None`` if not batchable.

    A request is batchable when every input has at least one dimension and all inputs have
    the same size along axis 0. Two requests batch together when each input has the same
    dtype and the same shape past axis 0.
    """
    arrays = list(inputs.values())
    if not arrays or any(a.ndim == 0 for a in arrays):
        return None
    if len({a.shape[0] for a in arrays}) != 1:
        return None
    return tuple(sorted((name, a.dtype.str, a.shape[1:]) for name, a in inputs.items()))


@dataclass(slots=True)
class _Pending:
    inputs: Tensors
    key: Hashable | None
    future: asyncio.Future[Tensors]
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """Queue and worker that batch a model's requests.

    Parameters
    ----------
    model
        Model name, the metrics label.
    backend
        The loaded model.
    metrics
        Where batch sizes and queue/compute latencies are recorded.
    max_batch_size
        Most requests per backend call; 1 turns batching off.
    max_queue_delay_ms
        Longest the worker waits, once it holds a request, for requests announced by
        :meth:`arriving` to reach the queue; it never waits when none is announced.
    batchable
        Whether the model accepts a variable first dimension on every input and output.
    inline_compute_ms
        Run a lone request on the event loop instead of the worker thread when the model's
        single-request calls average at most this long (see the module docstring); 0 (the
        default) always uses the worker thread. Only for backends that may run on the
        event loop's thread (no event loop of their own, no thread-local state).
    """

    def __init__(
        self,
        model: str,
        backend: Backend,
        metrics: InferenceMetrics,
        *,
        max_batch_size: int = 1,
        max_queue_delay_ms: float = 0.0,
        batchable: bool = False,
        inline_compute_ms: float = 0.0,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._model = model
        self._backend = backend
        self._max_batch_size = max_batch_size if batchable else 1
        self._max_delay = max(0.0, max_queue_delay_ms) / 1000.0
        self._queue: deque[_Pending] = deque()
        self._arriving = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # a batch is being gathered or run (by the worker or a caller)
        self._inline_max = max(0.0, inline_compute_ms) / 1000.0
        self._solo: float | None = None  # moving average of single-request call seconds
        self._executor: ThreadPoolExecutor | None = None
        self._batch_size = metrics.batch_size.labels(model=model)
        self._queue_seconds = metrics.queue_seconds.labels(model=model)
        self._compute_seconds = metrics.compute_seconds.labels(model=model)

    @property
    def max_batch_size(self) -> int:
        """Effective most requests per backend call (1 when the model cannot batch)."""
        return self._max_batch_size

    def start(self) -> None:
        """Start the worker task on the running event loop."""
        if self._task is None:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"model-{self._model}")
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"batcher-{self._model}"
            )

    async def stop(self) -> None:
        """Stop the worker; queued requests fail with :class:`ModelNotReadyError`."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)  # a running call finishes on its own
            self._executor = None
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(
                    ModelNotReadyError(f"model {self._model!r} is shutting down")
                )

    async def drain(self, grace_s: float = 30.0) -> None:
        """Let queued and running requests finish, then stop (see :meth:`stop`).

        Used when a reloaded model replaces this one: nothing new is queued here any more.

        Parameters
        ----------
        grace_s
            Longest wait (seconds) before stopping anyway.
        """
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    await self._idle.wait()
        await self.stop()

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Announce a request that will be queued soon (e.g. while it is being decoded).

        While at least one announced request is not queued yet, a worker holding a
        partial batch waits for it, at most ``max_queue_delay_ms``. Leave the block once
        the request is queued (:meth:`enqueue`) or given up.
        """
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1
            if self._busy:
                self._wakeup.set()  # a gathering worker re-checks what it still expects

    def enqueue(self, inputs: Tensors) -> asyncio.Future[Tensors]:
        """Queue one request; the future gets its outputs (see :meth:`submit`).

        Raises
        ------
        ModelNotReadyError
            The batcher is not running.
        """
        if self._task is None:
            raise ModelNotReadyError(f"model {self._model!r} is not serving")
        key = batch_key(inputs) if self._max_batch_size > 1 else None
        future: asyncio.Future[Tensors] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(inputs, key, future))
        self._idle.clear()
        self._wakeup.set()
        return future

    async def submit(self, inputs: Tensors) -> Tensors:
        """Queue one request and wait for its outputs.

        Parameters
        ----------
        inputs
            Validated input arrays by name.

        Returns
        -------
        dict of str to numpy.ndarray
            Every model output by name, for this request's rows only.

        Raises
        ------
        BackendError
            The backend call failed.
        ModelNotReadyError
            The batcher is not running.
        """
        if self._task is None or self._busy or self._queue or not self._inline_ok():
            return await self.enqueue(inputs)
        # Idle, and the model's calls are short: run it now, in this task (synchronously:
        # nothing else runs on the loop meanwhile, nothing can queue behind it).
        return self._run_inline(inputs)

    def _inline_ok(self) -> bool:
        solo = self._solo
        return solo is not None and solo <= self._inline_max

    def _take(self, batch: list[_Pending]) -> bool:
        """Move queued requests with the batch's key into it; False at a different key."""
        key = batch[0].key
        while self._queue and len(batch) < self._max_batch_size:
            if self._queue[0].key != key:
                return False
            batch.append(self._queue.popleft())
        return True

    async def _next_batch(self) -> list[_Pending]:
        """Take the next batch from the (non-empty) queue; cancelled: it goes back."""
        first = self._queue.popleft()
        batch = [first]
        if first.key is None or self._max_batch_size == 1:
            return batch
        try:
            return await self._gather(batch)
        except BaseException:
            self._queue.extendleft(reversed(batch))
            raise

    async def _gather(self, batch: list[_Pending]) -> list[_Pending]:
        await asyncio.sleep(0)  # one loop turn: handlers already runnable queue their requests
        if not self._take(batch):
            return batch
        deadline = time.perf_counter() + self._max_delay
        while len(batch) < self._max_batch_size and self._arriving > 0:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                break
            if not self._take(batch):
                break
        return batch

    async def _run(self) -> None:
        while True:
            while not self._queue or self._busy:
                self._wakeup.clear()
                await self._wakeup.wait()
            self._busy = True
            try:
                batch = await self._next_batch()
                live = [p for p in batch if not p.future.done()]  # callers may have gone
                if live:
                    await self._execute(live)
            finally:
                self._busy = False
            if not self._queue:
                self._idle.set()

    def _started(self, batch: list[_Pending]) -> float:
        started = time.perf_counter()
        for pending in batch:
            self._queue_seconds.observe(started - pending.enqueued)
        self._batch_size.observe(len(batch))
        return started

    def _fail(self, batch: list[_Pending], exc: Exception) -> None:
        _log.exception("inference failed", extra={"model": self._model, "batch": len(batch)})
        error = (
            exc
            if isinstance(exc, BackendError)
            else BackendError(f"model {self._model!r} failed to run: {_summary(exc)}")
        )
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(error)

    @staticmethod
    def _deliver(batch: list[_Pending], results: list[Tensors]) -> None:
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)

    async def _execute(self, batch: list[_Pending]) -> None:
        started = self._started(batch)
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(
                self._executor, self._infer, [p.inputs for p in batch]
            )
        except Exception as exc:
            self._fail(batch, exc)
            return
        finally:
            self._compute_seconds.observe(time.perf_counter() - started)
        self._deliver(batch, results)

    def _run_inline(self, inputs: Tensors) -> Tensors:
        """One request's backend call on the event loop (see :meth:`submit`)."""
        self._queue_seconds.observe(0.0)
        self._batch_size.observe(1)
        started = time.perf_counter()
        try:
            return self._infer([inputs])[0]
        except BackendError:
            _log.exception("inference failed", extra={"model": self._model, "batch": 1})
            raise
        except Exception as exc:
            _log.exception("inference failed", extra={"model": self._model, "batch": 1})
            raise BackendError(f"model {self._model!r} failed to run: {_summary(exc)}") from exc
        finally:
            self._compute_seconds.observe(time.perf_counter() - started)

    def _infer(self, requests: list[Tensors]) -> list[Tensors]:
        """One backend call for ``requests`` (worker thread or inline): concatenate, split."""
        if len(requests) == 1:
            started = time.perf_counter()
            try:
                return [self._backend.infer(requests[0])]
            finally:
                elapsed = time.perf_counter() - started
                solo = self._solo
                self._solo = elapsed if solo is None else solo + _SOLO_SMOOTHING * (elapsed - solo)
        inputs = {name: np.concatenate([r[name] for r in requests], axis=0) for name in requests[0]}
        outputs = self._backend.infer(inputs)
        return _split(outputs, [int(next(iter(r.values())).shape[0]) for r in requests])


def _split(outputs: Tensors, rows: list[int]) -> list[Tensors]:
    total = sum(rows)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise BackendError(
                f"output {name!r} has shape {list(array.shape)}, cannot split a batch of "
                f"{total} rows"
            )
    bounds = np.cumsum([0, *rows])
    return [
        {name: array[int(lo) : int(hi)] for name, array in outputs.items()}
        for lo, hi in itertools.pairwise(bounds)
    ]


def _summary(exc: BaseException, limit: int = 300) -> str:
    """First line of an exception's message, bounded: what a client may see."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
