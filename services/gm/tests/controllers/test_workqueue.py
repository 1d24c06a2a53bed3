"""Work queue and rate limiter semantics (client-go workqueue)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from sedna_gm.controllers.metrics import ControllerMetrics
from sedna_gm.controllers.ratelimit import (
    BucketRateLimiter,
    ExponentialBackoffRateLimiter,
    MaxOfRateLimiter,
    default_controller_rate_limiter,
)
from sedna_gm.controllers.workqueue import QueueShutDown, WorkQueue


async def test_key_added_many_times_is_processed_once() -> None:
    queue: WorkQueue[str] = WorkQueue("t")
    for _ in range(5):
        queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    assert await queue.get() == "a"
    assert await queue.get() == "b"
    assert len(queue) == 0


async def test_key_readded_while_processing_waits_for_done() -> None:
    queue: WorkQueue[str] = WorkQueue("t")
    queue.add("a")
    key = await queue.get()
    queue.add("a")
    queue.add("a")
    # Not handed out again while a worker holds it.
    assert len(queue) == 0
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.done(key)
    assert await asyncio.wait_for(getter, 1) == "a"
    queue.done("a")
    assert len(queue) == 0


async def test_no_key_is_processed_by_two_workers_at_once() -> None:
    queue: WorkQueue[int] = WorkQueue("t")
    active: set[int] = set()
    overlaps = 0
    processed = 0

    async def worker() -> None:
        nonlocal overlaps, processed
        while True:
            try:
                key = await queue.get()
            except QueueShutDown:
                return
            if key in active:
                overlaps += 1
            active.add(key)
            await asyncio.sleep(0.001)
            queue.add(key % 3)  # keep re-adding keys being processed
            active.discard(key)
            processed += 1
            queue.done(key)

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    for i in range(30):
        queue.add(i % 3)
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    assert await queue.shutdown_with_drain(2)
    await asyncio.wait_for(asyncio.gather(*workers), 2)
    assert overlaps == 0
    assert processed > 3


async def test_add_after_delays_and_keeps_earliest() -> None:
    queue: WorkQueue[str] = WorkQueue("t")
    loop = asyncio.get_running_loop()
    start = loop.time()
    queue.add_after("a", 5.0)
    queue.add_after("a", 0.05)  # earlier deadline wins
    queue.add_after("a", 10.0)  # later one is ignored
    assert len(queue) == 0
    assert await asyncio.wait_for(queue.get(), 2) == "a"
    elapsed = loop.time() - start
    assert 0.04 <= elapsed < 1.0


def test_exponential_backoff_grows_caps_and_forgets() -> None:
    limiter = ExponentialBackoffRateLimiter(base=0.005, cap=0.1)
    delays = [limiter.when("k") for _ in range(8)]
    assert delays[:5] == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.08])
    assert delays[5:] == [0.1, 0.1, 0.1]
    assert limiter.num_requeues("k") == 8
    assert limiter.when("other") == pytest.approx(0.005)
    limiter.forget("k")
    assert limiter.num_requeues("k") == 0
    assert limiter.when("k") == pytest.approx(0.005)
    for _ in range(200):  # no overflow far past the cap
        assert limiter.when("k") <= 0.1


def test_token_bucket_limits_overall_rate() -> None:
    now = [100.0]
    bucket = BucketRateLimiter(qps=10, burst=2, clock=lambda: now[0])
    assert [bucket.when(i) for i in range(5)] == pytest.approx([0, 0, 0.1, 0.2, 0.3])
    now[0] += 1.0  # refilled (the reserved future tokens are paid back first)
    assert bucket.when("x") == pytest.approx(0.0)


def test_max_of_combines_backoff_and_bucket() -> None:
    now = [0.0]
    limiter = MaxOfRateLimiter(
        ExponentialBackoffRateLimiter(0.005, 300), BucketRateLimiter(10, 1, lambda: now[0])
    )
    assert limiter.when("a") == pytest.approx(0.005)  # bucket has a token; backoff wins
    assert limiter.when("b") == pytest.approx(0.1)  # bucket empty; bucket wins
    assert default_controller_rate_limiter().when("x") == pytest.approx(0.005)


def test_rate_limiter_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="base must be > 0"):
        ExponentialBackoffRateLimiter(base=0)
    with pytest.raises(ValueError, match="burst must be >= 1"):
        BucketRateLimiter(qps=1, burst=0)


async def test_add_rate_limited_backs_off_and_forget_resets() -> None:
    queue: WorkQueue[str] = WorkQueue("t", ExponentialBackoffRateLimiter(0.01, 1.0))
    loop = asyncio.get_running_loop()
    waits = []
    for _ in range(3):
        start = loop.time()
        queue.add_rate_limited("k")
        key = await asyncio.wait_for(queue.get(), 2)
        waits.append(loop.time() - start)
        queue.done(key)
    assert queue.num_requeues("k") == 3
    assert waits[2] >= 0.035  # 0.01, 0.02, 0.04
    queue.forget("k")
    assert queue.num_requeues("k") == 0


async def test_shutdown_hands_out_remaining_then_stops_and_drains() -> None:
    queue: WorkQueue[str] = WorkQueue("t")
    queue.add("a")
    queue.add("b")
    first = await queue.get()
    queue.add_after("late", 10)
    drain = asyncio.create_task(queue.shutdown_with_drain(2))
    await asyncio.sleep(0)
    queue.add("c")  # ignored after shutdown
    assert await queue.get() == "b"
    queue.done(first)
    queue.done("b")
    assert await drain
    with pytest.raises(QueueShutDown):
        await queue.get()


async def test_shutdown_wakes_idle_workers() -> None:
    queue: WorkQueue[str] = WorkQueue("t")
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.shutdown()
    with pytest.raises(QueueShutDown):
        await asyncio.wait_for(getter, 1)


async def test_drain_times_out_when_a_key_is_never_done() -> None:
    queue: WorkQueue[str] = WorkQueue("t")
    queue.add("a")
    await queue.get()
    assert not await queue.shutdown_with_drain(0.05)


async def test_metrics_depth_adds_and_retries() -> None:
    registry = CollectorRegistry()
    queue: WorkQueue[str] = WorkQueue("ds", metrics=ControllerMetrics(registry))
    queue.add("a")
    queue.add("a")
    queue.add("b")

    def value(name: str) -> float | None:
        return registry.get_sample_value(name, {"controller": "ds"})

    assert value("sedna_controller_queue_depth") == 2
    assert value("sedna_controller_queue_adds_total") == 2
    await queue.get()
    assert value("sedna_controller_queue_depth") == 1
    queue.add_rate_limited("c")
    assert value("sedna_controller_queue_retries_total") == 1
