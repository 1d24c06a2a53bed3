"""Controller and Manager: workers, error backoff, requeue, secondary watches, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sedna.resources.objects import ObjectKey, OwnerRef, ResourceObject
from sedna_gm.controllers.controller import ReconcileResult, owner_mapper
from sedna_gm.controllers.manager import Manager
from sedna_gm.controllers.ratelimit import ExponentialBackoffRateLimiter


class ScriptedReconciler:
    """Fails the first ``failures`` reconciles of each key, records timing and overlap."""

    def __init__(self, failures: int = 0, delay: float = 0.0) -> None:
        self.failures = failures
        self.delay = delay
        self.calls: list[ObjectKey] = []
        self.times: list[float] = []
        self.active: set[ObjectKey] = set()
        self.overlaps = 0
        self.result = ReconcileResult()

    async def reconcile(self, key: ObjectKey) -> ReconcileResult:
        if key in self.active:
            self.overlaps += 1
        self.active.add(key)
        try:
            self.calls.append(key)
            self.times.append(asyncio.get_running_loop().time())
            await asyncio.sleep(self.delay)
            if self.calls.count(key) <= self.failures:
                raise RuntimeError(f"transient failure of {key}")
            return self.result
        finally:
            self.active.discard(key)


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_errors_are_retried_with_growing_backoff_and_counted(
    store: Any, make_dataset: Callable[..., ResourceObject], eventually: Any
) -> None:
    registry = CollectorRegistry()
    manager = Manager(store, registry)
    reconciler = ScriptedReconciler(failures=3)
    controller = manager.add_controller(
        "t", "Dataset", reconciler, rate_limiter=ExponentialBackoffRateLimiter(0.02, 1.0)
    )
    await store.create(make_dataset("a"))
    await manager.start()
    try:
        await eventually(lambda: len(reconciler.calls) == 4, what="4 reconciles")
        gaps = [b - a for a, b in zip(reconciler.times, reconciler.times[1:], strict=False)]
        assert gaps[0] >= 0.015
        assert gaps[1] >= 0.035
        assert gaps[2] >= 0.075
        key = ObjectKey("Dataset", "default", "a")
        await eventually(lambda: controller.queue.num_requeues(key) == 0, what="forget")
        assert _value(registry, "sedna_controller_reconcile_errors_total", controller="t") == 3
        assert (
            _value(registry, "sedna_controller_reconcile_total", controller="t", result="error")
            == 3
        )
        assert (
            _value(registry, "sedna_controller_reconcile_total", controller="t", result="success")
            == 1
        )
        assert _value(registry, "sedna_controller_reconcile_seconds_count", controller="t") == 4
    finally:
        await manager.stop()


async def test_requeue_after_rechecks_periodically(
    store: Any, make_dataset: Callable[..., ResourceObject], eventually: Any
) -> None:
    manager = Manager(store)
    reconciler = ScriptedReconciler()
    reconciler.result = ReconcileResult(requeue_after=0.02)
    manager.add_controller("t", "Dataset", reconciler)
    await store.create(make_dataset("a"))
    await manager.start()
    try:
        await eventually(lambda: len(reconciler.calls) >= 3, what="periodic re-checks")
    finally:
        await manager.stop()


async def test_many_workers_never_reconcile_one_key_twice_at_once(
    store: Any, make_dataset: Callable[..., ResourceObject], eventually: Any
) -> None:
    manager = Manager(store)
    reconciler = ScriptedReconciler(delay=0.005)
    controller = manager.add_controller("t", "Dataset", reconciler, workers=4)
    for name in ("a", "b", "c"):
        await store.create(make_dataset(name))
    await manager.start()
    try:
        key = ObjectKey("Dataset", "default", "a")
        for _ in range(20):
            controller.enqueue(key)
            await asyncio.sleep(0.001)
        await eventually(lambda: not controller.queue.processing() and not len(controller.queue))
        assert reconciler.overlaps == 0
        assert {k.name for k in reconciler.calls} == {"a", "b", "c"}
    finally:
        await manager.stop()


async def test_secondary_kind_maps_to_owner(
    store: Any, make_dataset: Callable[..., ResourceObject], eventually: Any
) -> None:
    manager = Manager(store)
    reconciler = ScriptedReconciler()
    manager.add_controller("t", "Dataset", reconciler, secondary={"Model": owner_mapper("Dataset")})
    owner = await store.create(make_dataset("owner"))
    await manager.start()
    try:
        await eventually(lambda: len(reconciler.calls) == 1)
        child = ResourceObject(
            kind="Model",
            name="m",
            spec={"url": "/m.pb", "format": "pb"},
            owner_references=[OwnerRef("sedna.io/v1alpha1", "Dataset", "owner", owner.uid, True)],
        )
        await store.create(child)
        await eventually(lambda: len(reconciler.calls) == 2, what="reconcile from child")
        assert reconciler.calls[-1] == owner.key
    finally:
        await manager.stop()


async def test_manager_rejects_duplicate_names_and_bad_workers(store: Any) -> None:
    manager = Manager(store)
    manager.add_controller("t", "Dataset", ScriptedReconciler())
    with pytest.raises(ValueError, match="already registered"):
        manager.add_controller("t", "Model", ScriptedReconciler())
    with pytest.raises(ValueError, match="workers must be >= 1"):
        manager.add_controller("u", "Model", ScriptedReconciler(), workers=0)


async def test_stop_lets_inflight_reconcile_finish(
    store: Any, make_dataset: Callable[..., ResourceObject], eventually: Any
) -> None:
    manager = Manager(store)
    reconciler = ScriptedReconciler(delay=0.1)
    manager.add_controller("t", "Dataset", reconciler)
    await store.create(make_dataset("a"))
    await manager.start()
    await eventually(lambda: bool(reconciler.active), what="reconcile in flight")
    await manager.stop()
    assert not reconciler.active
    assert len(reconciler.calls) == 1
