"""SqlEventRecorder: dedupe and counts, bounds, write-behind, reopen on SQLite, pruning."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sedna.resources.objects import ObjectKey
from sedna_gm.events import SqlEventRecorder

A = ObjectKey("Dataset", "default", "a")
B = ObjectKey("Dataset", "default", "b")
C = ObjectKey("Model", "ns1", "c")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2024, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gm.db'}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_dedupe_counts_and_survives_reopen(url: str, clock: Clock) -> None:
    rec = SqlEventRecorder(url, clock=clock, flush_interval=0.01)
    await rec.start()
    rec.record(A, "Warning", "NodeNotFound", "node edge-9 not found", source="dataset")
    rec.record(A, "Warning", "NodeNotFound", "node edge-9 not found", source="dataset")
    rec.record(A, "Warning", "NodeNotFound", "node edge-9 not found", source="dataset")
    rec.record(A, "Normal", "Sent", "sent to edge-1", source="dataset")
    rec.record(B, "Normal", "Sent", "sent to edge-1", source="dataset")
    await rec.close()

    again = SqlEventRecorder(url, clock=clock)
    await again.start()
    try:
        events = await again.list_events(A)
        assert [(e.reason, e.count) for e in events] == [("NodeNotFound", 3), ("Sent", 1)]
        first = events[0]
        assert first.type == "Warning"
        assert first.source == "dataset"
        assert first.message == "node edge-9 not found"
        assert first.last_time - first.first_time == timedelta(seconds=2)
        assert first.first_time.tzinfo is not None
        # Counting carries on across the restart (the memory was loaded from the table).
        again.record(A, "Normal", "Sent", "sent to edge-1", source="dataset")
        assert [e.count for e in again.events_for(A)] == [3, 2]
        assert [e.reason for e in await again.list_events(B)] == ["Sent"]
        assert await again.list_events(C) == []
    finally:
        await again.close()


async def test_write_behind_reaches_the_table(url: str) -> None:
    rec = SqlEventRecorder(url, flush_interval=0.01)
    await rec.start()
    try:
        rec.record(A, "Normal", "Sent", "one")
        # Unwritten events are answered from memory...
        assert [e.message for e in await rec.list_events(A)] == ["one"]
        # ...and reach the table without anyone calling flush.
        for _ in range(200):
            if not rec._dirty:
                break
            await asyncio.sleep(0.01)
        assert not rec._dirty
        other = SqlEventRecorder(url)  # another reader of the same database
        await other.start()
        assert [e.message for e in await other.list_events(A)] == ["one"]
        await other.close()
    finally:
        await rec.close()


async def test_bounds_per_object_and_objects(url: str, clock: Clock) -> None:
    rec = SqlEventRecorder(url, per_object=3, max_objects=2, clock=clock)
    await rec.start()
    for i in range(5):
        rec.record(A, "Normal", "Step", f"step {i}")
    rec.record(B, "Normal", "Sent", "b")
    rec.record(C, "Normal", "Sent", "c")  # A is the least recently noted: it goes
    await rec.close()

    again = SqlEventRecorder(url, per_object=3, max_objects=2)
    await again.start()
    try:
        assert await again.list_events(A) == []
        assert [e.message for e in await again.list_events(B)] == ["b"]
        assert [e.message for e in await again.list_events(C)] == ["c"]
        with again._engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT count(*) FROM sedna_events").scalar()
        assert rows == 2
    finally:
        await again.close()


async def test_loads_only_the_most_recent_objects(url: str, clock: Clock) -> None:
    rec = SqlEventRecorder(url, per_object=2, clock=clock)
    await rec.start()
    for key in (A, B, C):
        rec.record(key, "Normal", "Sent", str(key))
        rec.record(key, "Normal", "Again", str(key))
        rec.record(key, "Normal", "Third", str(key))
    await rec.close()
    again = SqlEventRecorder(url, per_object=2, max_objects=2)
    await again.start()
    try:
        assert again.events_for(A) == []
        assert [e.reason for e in again.events_for(B)] == ["Again", "Third"]
        assert [e.reason for e in again.events_for(C)] == ["Again", "Third"]
    finally:
        await again.close()


async def test_prune_drops_quiet_events_of_deleted_objects(url: str, clock: Clock) -> None:
    alive = {B}

    async def exists(key: ObjectKey) -> bool:
        return key in alive

    rec = SqlEventRecorder(url, clock=clock, retention=60, exists=exists)
    await rec.start()
    try:
        rec.record(A, "Normal", "Sent", "a")
        rec.record(B, "Normal", "Sent", "b")
        assert await rec.prune() == 0  # not quiet long enough
        clock.now += timedelta(minutes=5)
        rec.record(C, "Normal", "Sent", "c")  # recent: kept although C does not exist
        assert await rec.prune() == 1
        await rec.flush()
        assert await rec.list_events(A) == []
        assert [e.message for e in await rec.list_events(B)] == ["b"]
        assert [e.message for e in await rec.list_events(C)] == ["c"]
    finally:
        await rec.close()


async def test_a_failed_write_never_reaches_the_caller(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    rec = SqlEventRecorder(url)
    await rec.start()

    def broken(*_: object) -> None:
        raise OSError("disk full")

    rec._write = broken  # type: ignore[method-assign]
    rec.record(A, "Normal", "Sent", "kept in memory")
    with caplog.at_level(logging.DEBUG, logger="sedna_gm.events.sql"):
        await rec.flush()
    assert "disk full" in caplog.text
    assert A in rec._dirty  # retried at the next flush
    assert [e.message for e in await rec.list_events(A)] == ["kept in memory"]
    del rec._write
    await rec.close()
    again = SqlEventRecorder(url)
    await again.start()
    assert [e.message for e in await again.list_events(A)] == ["kept in memory"]
    await again.close()


def test_rejects_bad_settings(url: str) -> None:
    with pytest.raises(ValueError, match="positive"):
        SqlEventRecorder(url, flush_interval=0)
