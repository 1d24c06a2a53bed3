"""Adaptive batching: a lone request runs at once, concurrent ones still form batches.

No timed assertions: a lone request must be answered well before a huge
``max_queue_delay_ms`` (the deadline of the wait is a tenth of that delay).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client import CollectorRegistry

from sedna.serving import BackendMetadata, InferenceMetrics, TensorSpec
from sedna.serving.batcher import DynamicBatcher
from sedna.serving.errors import BackendError

Array = npt.NDArray[np.generic]
HUGE_DELAY_MS = 600_000.0
"""Ten minutes: a test that waited for it would hit its own deadline first."""
DEADLINE_S = 60.0


class RecordingBackend:
    """y = x + 1; records the rows of every call; blocks while ``gate`` is clear."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def metadata(self) -> BackendMetadata:
        return BackendMetadata("fake", (TensorSpec("x", "FP32", (-1, 2)),), ())

    def infer(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        self.entered.set()
        assert self.gate.wait(DEADLINE_S)
        x = inputs["x"]
        self.rows.append(int(x.shape[0]))
        return {"y": np.asarray(x) + 1}


def _batcher(backend: RecordingBackend, max_batch_size: int = 8) -> DynamicBatcher:
    batcher = DynamicBatcher(
        "m",
        backend,
        InferenceMetrics(CollectorRegistry()),
        max_batch_size=max_batch_size,
        max_queue_delay_ms=HUGE_DELAY_MS,
        batchable=True,
    )
    batcher.start()
    return batcher


def _x(value: float) -> dict[str, Array]:
    return {"x": np.full((1, 2), value, dtype=np.float32)}


async def test_a_lone_request_is_not_delayed_by_max_queue_delay() -> None:
    backend = RecordingBackend()
    batcher = _batcher(backend)
    async with asyncio.timeout(HUGE_DELAY_MS / 1000 / 10):
        for i in range(3):  # one after the other: each alone
            result = await batcher.submit(_x(i))
            np.testing.assert_array_equal(result["y"], np.full((1, 2), i + 1, np.float32))
    assert backend.rows == [1, 1, 1]
    await batcher.stop()


async def test_concurrent_requests_form_one_batch() -> None:
    backend = RecordingBackend()
    batcher = _batcher(backend)
    async with asyncio.timeout(DEADLINE_S):
        results = await asyncio.gather(*(batcher.submit(_x(i)) for i in range(5)))
    assert backend.rows == [5]
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], np.full((1, 2), i + 1, np.float32))
    await batcher.stop()


async def test_requests_queued_while_a_batch_runs_make_the_next_batch() -> None:
    backend = RecordingBackend()
    backend.gate.clear()
    batcher = _batcher(backend, max_batch_size=4)
    async with asyncio.timeout(DEADLINE_S):
        first = asyncio.ensure_future(batcher.submit(_x(0)))
        assert await asyncio.to_thread(backend.entered.wait, DEADLINE_S)  # #0 is running
        rest = [asyncio.ensure_future(batcher.submit(_x(i))) for i in range(1, 7)]
        await asyncio.sleep(0)
        backend.gate.set()
        results = await asyncio.gather(first, *rest)
    assert backend.rows == [1, 4, 2]  # at most max_batch_size, nothing waits for the delay
    assert [float(r["y"][0, 0]) for r in results] == [float(i + 1) for i in range(7)]
    await batcher.stop()


async def test_the_delay_waits_only_for_announced_requests() -> None:
    backend = RecordingBackend()
    batcher = _batcher(backend)
    async with asyncio.timeout(DEADLINE_S):
        with batcher.arriving():  # a request being prepared: the worker waits for it
            first = asyncio.ensure_future(batcher.submit(_x(0)))
            for _ in range(5):
                await asyncio.sleep(0)
            assert not first.done()
            assert backend.rows == []
            second = batcher.enqueue(_x(1))
        results = await asyncio.gather(first, second)
    assert backend.rows == [2]
    assert [float(r["y"][0, 0]) for r in results] == [1.0, 2.0]
    async with asyncio.timeout(HUGE_DELAY_MS / 1000 / 10):
        with batcher.arriving():  # announced, then given up: the worker stops waiting
            third = asyncio.ensure_future(batcher.submit(_x(2)))
            await asyncio.sleep(0)
        await third
    assert backend.rows == [2, 1]
    await batcher.stop()


class ThreadRecordingBackend(RecordingBackend):
    """Also records the thread of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def infer(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        self.threads.append(threading.get_ident())
        return super().infer(inputs)


def _inline_batcher(backend: RecordingBackend, inline_compute_ms: float) -> DynamicBatcher:
    batcher = DynamicBatcher(
        "m",
        backend,
        InferenceMetrics(CollectorRegistry()),
        max_batch_size=8,
        max_queue_delay_ms=HUGE_DELAY_MS,
        batchable=True,
        inline_compute_ms=inline_compute_ms,
    )
    batcher.start()
    return batcher


async def test_short_lone_calls_run_on_the_event_loop_once_measured() -> None:
    backend = ThreadRecordingBackend()
    batcher = _inline_batcher(backend, inline_compute_ms=60_000.0)  # any call is "short"
    loop_thread = threading.get_ident()
    async with asyncio.timeout(DEADLINE_S):
        for i in range(3):
            result = await batcher.submit(_x(i))
            np.testing.assert_array_equal(result["y"], np.full((1, 2), i + 1, np.float32))
    # the first call is timed on the worker thread, then they run inline
    assert backend.threads[0] != loop_thread
    assert backend.threads[1:] == [loop_thread, loop_thread]
    await batcher.stop()


async def test_inline_off_or_slow_calls_stay_on_the_worker_thread() -> None:
    for inline_ms in (0.0, 1e-9):  # off; a threshold no call meets
        backend = ThreadRecordingBackend()
        batcher = _inline_batcher(backend, inline_compute_ms=inline_ms)
        async with asyncio.timeout(DEADLINE_S):
            for i in range(3):
                await batcher.submit(_x(i))
        assert threading.get_ident() not in backend.threads
        await batcher.stop()


async def test_requests_never_run_inline_while_the_backend_is_busy() -> None:
    backend = ThreadRecordingBackend()
    backend.gate.clear()
    batcher = _inline_batcher(backend, inline_compute_ms=60_000.0)
    async with asyncio.timeout(DEADLINE_S):
        first = asyncio.ensure_future(batcher.submit(_x(0)))  # not measured yet: thread
        assert await asyncio.to_thread(backend.entered.wait, DEADLINE_S)
        backend.gate.set()  # (the call finishes on its own; the loop has not seen it yet)
        rest = [asyncio.ensure_future(batcher.submit(_x(i))) for i in range(1, 5)]
        results = await asyncio.gather(first, *rest)
    assert backend.rows == [1, 4]  # queued behind the running call: one batch
    assert threading.get_ident() not in backend.threads
    assert [float(r["y"][0, 0]) for r in results] == [1.0, 2.0, 3.0, 4.0, 5.0]
    await batcher.stop()


async def test_an_inline_failure_is_a_backend_error() -> None:
    class Failing(RecordingBackend):
        fail = False

        def infer(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
            if self.fail:
                raise RuntimeError("boom\nsecond line")
            return super().infer(inputs)

    backend = Failing()
    batcher = _inline_batcher(backend, inline_compute_ms=60_000.0)
    async with asyncio.timeout(DEADLINE_S):
        await batcher.submit(_x(0))
        backend.fail = True
        with pytest.raises(BackendError, match=r"failed to run: boom$"):
            await batcher.submit(_x(1))
        backend.fail = False
        np.testing.assert_array_equal((await batcher.submit(_x(2)))["y"], np.full((1, 2), 3.0))
    await batcher.stop()
