"""Conditions, events and the conflict-retrying status writer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_gm.controllers.conditions import find_condition, remove_condition, set_condition
from sedna_gm.controllers.events import MemoryEventRecorder
from sedna_gm.controllers.status import update_object, update_status
from sedna_gm.store.errors import ConflictError

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_transition_time_changes_only_with_status() -> None:
    status: dict[str, Any] = {}
    assert set_condition(status, "Ready", "False", "NodeNotFound", "no node", now=T0)
    assert status["conditions"][0]["lastTransitionTime"] == "2024-05-01T12:00:00Z"
    # Same status, new message and generation: refreshed, transition time kept.
    t1 = T0 + timedelta(minutes=1)
    assert set_condition(
        status, "Ready", "False", "NodeNotFound", "still no node", observed_generation=2, now=t1
    )
    ready = find_condition(status, "Ready")
    assert ready is not None
    assert ready["message"] == "still no node"
    assert ready["observedGeneration"] == 2
    assert ready["lastTransitionTime"] == "2024-05-01T12:00:00Z"
    # Identical: no change reported.
    assert not set_condition(
        status, "Ready", "False", "NodeNotFound", "still no node", observed_generation=2, now=t1
    )
    # Status flips: transition time moves.
    t2 = T0 + timedelta(minutes=2)
    assert set_condition(status, "Ready", "True", "NodeFound", now=t2)
    ready = find_condition(status, "Ready")
    assert ready is not None
    assert ready["lastTransitionTime"] == "2024-05-01T12:02:00Z"
    assert "message" not in ready
    # One entry per type.
    set_condition(status, "Valid", "Unknown", "Checking", now=t2)
    assert [c["type"] for c in status["conditions"]] == ["Ready", "Valid"]
    assert remove_condition(status, "Valid")
    assert not remove_condition(status, "Valid")


def test_condition_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="status must be one of True, False, Unknown"):
        set_condition({}, "Ready", "yes", "R")  # type: ignore[arg-type]


def test_event_ring_buffer_dedupes_and_bounds() -> None:
    clock = iter(T0 + timedelta(seconds=i) for i in range(100))
    recorder = MemoryEventRecorder(per_object=3, max_objects=2, clock=lambda: next(clock))
    a, b, c = (ObjectKey("Dataset", "default", n) for n in "abc")
    recorder.record(a, "Warning", "NodeNotFound", "no node edge9")
    recorder.record(a, "Warning", "NodeNotFound", "no node edge9")
    [event] = recorder.events_for(a)
    assert event.count == 2
    assert event.last_time > event.first_time
    for i in range(4):
        recorder.record(a, "Normal", "Sent", f"generation {i}")
    assert [e.message for e in recorder.events_for(a)] == [
        "generation 1",
        "generation 2",
        "generation 3",
    ]
    recorder.record(b, "Normal", "Sent", "x")
    recorder.record(c, "Normal", "Sent", "x")  # a is the least recent: forgotten
    assert recorder.events_for(a) == []
    assert len(recorder.events_for(c)) == 1


class ConflictingStore:
    """Wraps a store; the first ``conflicts`` status writes race with another writer."""

    def __init__(self, inner: Any, conflicts: int) -> None:
        self.inner = inner
        self.conflicts = conflicts
        self.status_writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def update_status(self, obj: ResourceObject) -> ResourceObject:
        self.status_writes += 1
        if self.conflicts:
            self.conflicts -= 1
            # Another writer gets in first: the caller's version is stale.
            other = await self.inner.get(obj.kind, obj.namespace, obj.name)
            other.status["other"] = self.status_writes
            await self.inner.update_status(other)
        return await self.inner.update_status(obj)


async def test_status_update_retries_conflicts_and_skips_noops(
    store: Any, make_dataset: Callable[..., ResourceObject]
) -> None:
    created = await store.create(make_dataset("a"))
    racing = ConflictingStore(store, conflicts=2)

    def mutate(obj: ResourceObject) -> None:
        obj.status["numberOfSamples"] = 7

    written = await update_status(racing, created.key, mutate, current=created)
    assert written.status["numberOfSamples"] == 7
    assert written.status["other"] == 2  # re-read, re-applied on top of the other write
    assert racing.status_writes == 3
    version = written.resource_version
    again = await update_status(racing, created.key, mutate)
    assert again.resource_version == version
    assert racing.status_writes == 3


async def test_status_update_gives_up_after_five_conflicts(
    store: Any, make_dataset: Callable[..., ResourceObject]
) -> None:
    created = await store.create(make_dataset("a"))
    racing = ConflictingStore(store, conflicts=10)

    def mutate(obj: ResourceObject) -> None:
        obj.status["numberOfSamples"] = 7

    with pytest.raises(ConflictError):
        await update_status(racing, created.key, mutate, current=created)
    assert racing.status_writes == 5


async def test_update_object_writes_metadata_only_when_changed(
    store: Any, make_dataset: Callable[..., ResourceObject]
) -> None:
    created = await store.create(make_dataset("a"))

    def add(obj: ResourceObject) -> None:
        if "f" not in obj.finalizers:
            obj.finalizers.append("f")

    first = await update_object(store, created.key, add)
    assert first.finalizers == ["f"]
    assert first.resource_version != created.resource_version
    second = await update_object(store, created.key, add)
    assert second.resource_version == first.resource_version
