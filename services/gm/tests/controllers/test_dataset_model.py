"""Dataset and Model controllers end to end on a store, with fake node ports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from sedna.api.common.v1 import types_pb2
from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_gm.controllers import (
    CLEANUP_FINALIZER,
    DesiredStateRegistry,
    Manager,
    MemoryEventRecorder,
    ReportRouter,
    find_condition,
    setup_dataset_controller,
    setup_model_controller,
    update_object,
)
from sedna_gm.controllers.dataset import DatasetController

KEY = ObjectKey("Dataset", "default", "ds1")


@dataclass
class Env:
    store: Any
    manager: Manager
    router: ReportRouter
    desired: DesiredStateRegistry
    recorder: MemoryEventRecorder
    datasets: DatasetController


@pytest.fixture
async def env(store: Any, messenger: Any, nodes: Any) -> AsyncIterator[Env]:
    manager = Manager(store)
    router = ReportRouter()
    desired = DesiredStateRegistry()
    recorder = MemoryEventRecorder()
    datasets, _ = setup_dataset_controller(
        manager,
        router,
        desired,
        messenger=messenger,
        nodes=nodes,
        recorder=recorder,
        node_retry=0.05,
    )
    setup_model_controller(manager, router, recorder)
    await manager.start()
    try:
        yield Env(store, manager, router, desired, recorder, datasets)
    finally:
        await manager.stop()


def dataset_report(
    samples: int, *, error: str = "", name: str = "ds1", kind: str = "Dataset"
) -> hub_service_pb2.NodeReport:
    stamp = Timestamp(seconds=1_714_564_800)
    return hub_service_pb2.NodeReport(
        seq=1,
        owner=types_pb2.ObjectReference(kind=kind, namespace="default", name=name),
        dataset=hub_service_pb2.DatasetStatus(
            number_of_samples=samples, update_time=stamp, error=error
        ),
    )


async def _status(store: Any, key: ObjectKey = KEY) -> dict[str, Any]:
    obj = await store.get(key.kind, key.namespace, key.name)
    return dict(obj.status)


async def test_dataset_lifecycle(
    env: Env, messenger: Any, make_dataset: Callable[..., ResourceObject], eventually: Any
) -> None:
    store = env.store
    await store.create(make_dataset("ds1", "edge0"))
    await eventually(lambda: ("upsert", "edge0", KEY, 1) in messenger.calls, what="upsert")

    async def settled() -> bool:
        obj = await store.get("Dataset", "default", "ds1")
        return obj.status.get("observedGeneration") == 1 and CLEANUP_FINALIZER in obj.finalizers

    await eventually(settled, what="finalizer and status")
    status = await _status(store)
    assert status["phase"] == "Pending"
    node_ready = find_condition(status, "NodeReady")
    assert node_ready is not None
    assert node_ready["status"] == "True"

    # The node reports: samples counted, phase Ready; the same report again writes nothing.
    await env.router.handle_report("edge0", dataset_report(42))
    obj = await store.get("Dataset", "default", "ds1")
    assert obj.status["numberOfSamples"] == 42
    assert obj.status["updateTime"] == "2024-05-01T12:00:00Z"
    assert obj.status["phase"] == "Ready"
    await env.router.handle_report("edge0", dataset_report(42))
    again = await store.get("Dataset", "default", "ds1")
    assert again.resource_version == obj.resource_version

    # Desired state for a reconnecting node.
    assert [o.key for o, _ in await env.desired.desired_objects("edge0")] == [KEY]
    assert await env.desired.desired_objects("edge1") == []

    # Spec change: resent with the new generation.
    # The controller writes status concurrently, so edits go through read-modify-write.
    def set_spec(field: str, value: str) -> Callable[[ResourceObject], None]:
        def mutate(target: ResourceObject) -> None:
            target.spec[field] = value

        return mutate

    await update_object(store, KEY, set_spec("url", "/data/v2.txt"))
    await eventually(lambda: ("upsert", "edge0", KEY, 2) in messenger.calls, what="resend")

    # Moved to another node: removed from the old one, sent to the new one.
    await update_object(store, KEY, set_spec("nodeName", "edge1"))
    await eventually(lambda: ("upsert", "edge1", KEY, 3) in messenger.calls, what="move")
    assert ("remove", "edge0", KEY, 3) in messenger.calls
    # A late report from the old node changes nothing (once the move's status has landed).
    for _ in range(200):
        before = await store.get("Dataset", "default", "ds1")
        placed = find_condition(before.status, "NodeReady")
        if before.status.get("observedGeneration") == 3 and placed and "edge1" in placed["message"]:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError(f"the move to edge1 never reached the status: {before.status}")
    await env.router.handle_report("edge0", dataset_report(1))
    assert (await store.get("Dataset", "default", "ds1")).resource_version == (
        before.resource_version
    )

    # Delete: removed from the node, finalizer released, object gone.
    await store.delete("Dataset", "default", "ds1")
    await eventually(lambda: env.datasets.informer.get(KEY) is None, what="object gone")
    assert messenger.calls[-1][:2] == ("remove", "edge1")
    assert env.datasets.placement(KEY) is None
    reasons = [e.reason for e in env.recorder.events_for(KEY)]
    assert reasons[0] == "Sent"
    assert reasons[-1] == "Deleted"
    # A report for the gone Dataset is dropped, not raised.
    await env.router.handle_report("edge1", dataset_report(5))


async def test_unknown_node_is_a_condition_and_retried(
    env: Env,
    messenger: Any,
    nodes: Any,
    make_dataset: Callable[..., ResourceObject],
    eventually: Any,
) -> None:
    store = env.store
    await store.create(make_dataset("ds1", "edge9"))

    async def not_found() -> bool:
        cond = find_condition(await _status(store), "NodeReady")
        return cond is not None and cond["reason"] == "NodeNotFound"

    await eventually(not_found, what="NodeNotFound condition")
    status = await _status(store)
    assert status["phase"] == "Pending"
    assert "edge9" in find_condition(status, "NodeReady")["message"]  # type: ignore[index]
    assert messenger.calls == []
    assert env.recorder.events_for(KEY)[-1].reason == "NodeNotFound"
    # The node registers: the periodic re-check places the Dataset.
    nodes.names.add("edge9")
    await eventually(lambda: ("upsert", "edge9", KEY, 1) in messenger.calls, what="placed")


async def test_report_error_sets_failed_condition(
    env: Env, make_dataset: Callable[..., ResourceObject], eventually: Any
) -> None:
    await env.store.create(make_dataset("ds1", "edge0"))
    await eventually(lambda: env.datasets.placement(KEY) is not None, what="placement")
    await env.router.handle_report("edge0", dataset_report(0, error="open /data: no such file"))
    status = await _status(env.store)
    cond = find_condition(status, "DataReady")
    assert cond is not None
    assert cond["status"] == "False"
    assert cond["message"] == "open /data: no such file"
    assert status["phase"] == "Failed"


async def test_router_drops_unknown_kinds_and_ownerless_reports(env: Env) -> None:
    await env.router.handle_report("edge0", dataset_report(1, kind="Unknown"))
    await env.router.handle_report("edge0", hub_service_pb2.NodeReport(seq=3))
    with pytest.raises(ValueError, match="already registered"):
        env.router.register("Dataset", env.datasets)


async def test_model_validated_ready_and_metrics_from_reports(env: Env, eventually: Any) -> None:
    store = env.store
    key = ObjectKey("Model", "default", "m1")
    await store.create(
        ResourceObject(kind="Model", name="m1", spec={"url": "/models/m.pb", "format": "pb"})
    )

    async def ready() -> bool:
        obj = await store.get("Model", "default", "m1")
        return obj.status.get("phase") == "Ready" and CLEANUP_FINALIZER in obj.finalizers

    await eventually(ready, what="Model Ready")
    result = Struct()
    result.update({"metrics": {"acc": 0.93, "rounds": 3.0}})
    report = hub_service_pb2.NodeReport(
        seq=2,
        owner=types_pb2.ObjectReference(kind="Model", namespace="default", name="m1"),
        worker=types_pb2.WorkerReport(
            worker_name="w", results=[result], report_time=Timestamp(seconds=1_714_564_800)
        ),
    )
    await env.router.handle_report("edge0", report)
    status = await _status(store, key)
    assert status["metrics"] == [{"key": "acc", "value": "0.93"}, {"key": "rounds", "value": "3"}]
    assert status["updateTime"] == "2024-05-01T12:00:00Z"
    version = (await store.get("Model", "default", "m1")).resource_version
    await env.router.handle_report("edge0", report)
    assert (await store.get("Model", "default", "m1")).resource_version == version

    await store.delete("Model", "default", "m1")

    async def gone() -> bool:
        return env.manager.informer("Model").get(key) is None

    await eventually(gone, what="Model finalized")


async def test_invalid_spec_is_failed_not_crashed(env: Env, eventually: Any) -> None:
    # Written past validation (e.g. by an old client): the controller reports it.
    await env.store.create(ResourceObject(kind="Dataset", name="ds1", spec={"format": "xml"}))

    async def failed() -> bool:
        return (await _status(env.store)).get("phase") == "Failed"

    await eventually(failed, what="Failed phase")
    cond = find_condition(await _status(env.store), "Valid")
    assert cond is not None
    assert cond["reason"] == "InvalidSpec"
    assert "spec.url" in cond["message"]
