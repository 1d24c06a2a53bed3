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
from prometheus_client import CollectorRegistry

from sedna.serving import BackendMetadata, InferenceMetrics, TensorSpec
from sedna.serving.batcher import DynamicBatcher

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
