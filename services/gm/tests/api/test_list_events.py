"""ResourceService.ListEvents over real loopback gRPC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from sedna.api.gm.v1 import resource_service_pb2 as pb
from sedna.resources.objects import ObjectKey
from sedna_gm.controllers import MemoryEventRecorder
from sedna_gm.events import SqlEventRecorder

KEY = ObjectKey("Dataset", "default", "ds1")
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def ticking() -> Any:
    times = iter(T0 + timedelta(seconds=i) for i in range(1000))
    return lambda: next(times)


async def test_events_oldest_first_with_counts(store: Any, serve: Any) -> None:
    recorder = MemoryEventRecorder(clock=ticking())
    recorder.record(KEY, "Warning", "NodeNotFound", "node edge-9 not found", source="dataset")
    recorder.record(KEY, "Warning", "NodeNotFound", "node edge-9 not found", source="dataset")
    recorder.record(KEY, "Normal", "Sent", "sent to edge-1", source="dataset")
    _, stub = await serve(store, events=recorder)
    # Plural kind name and the default namespace, as for Get.
    reply = await stub.ListEvents(pb.ListEventsRequest(kind="datasets", name="ds1"))
    assert [(e.type, e.reason, e.count, e.source) for e in reply.events] == [
        ("Warning", "NodeNotFound", 2, "dataset"),
        ("Normal", "Sent", 1, "dataset"),
    ]
    first = reply.events[0]
    assert first.message == "node edge-9 not found"
    assert first.first_timestamp.ToDatetime(tzinfo=UTC) == T0
    assert first.last_timestamp.ToDatetime(tzinfo=UTC) == T0 + timedelta(seconds=1)


async def test_no_events_is_an_empty_list(store: Any, serve: Any) -> None:
    _, stub = await serve(store, events=MemoryEventRecorder())
    reply = await stub.ListEvents(pb.ListEventsRequest(kind="Model", name="never-existed"))
    assert list(reply.events) == []
    _, bare = await serve(store)  # no event source at all
    reply = await bare.ListEvents(pb.ListEventsRequest(kind="Dataset", name="ds1"))
    assert list(reply.events) == []


async def test_bad_requests(store: Any, serve: Any) -> None:
    _, stub = await serve(store, events=MemoryEventRecorder())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListEvents(pb.ListEventsRequest(kind="pods", name="x"))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "pods" in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListEvents(pb.ListEventsRequest(kind="Dataset"))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "name" in (info.value.details() or "")


async def test_sql_recorder_serves_events_after_a_restart(
    memory_store: Any, serve: Any, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'gm.db'}"
    first = SqlEventRecorder(url)
    await first.start()
    first.record(KEY, "Normal", "Sent", "sent to edge-1", source="dataset")
    await first.close()
    recorder = SqlEventRecorder(url)
    await recorder.start()
    try:
        _, stub = await serve(memory_store, events=recorder)
        reply = await stub.ListEvents(pb.ListEventsRequest(kind="Dataset", name="ds1"))
        assert [(e.reason, e.message) for e in reply.events] == [("Sent", "sent to edge-1")]
    finally:
        await recorder.close()
