"""LocalWorkloadRuntime against a recording NodeMessenger (memory and SQL store)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from sedna.api.common.v1 import types_pb2
from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.objects import ResourceObject
from sedna.resources.worker import WorkerOwner, WorkerPhaseName, WorkerSpec
from sedna_gm.core.ports import NodeInfo
from sedna_gm.store.sql import SqlResourceStore
from sedna_gm.workloads import (
    DesiredWorker,
    RuntimeMode,
    WorkloadError,
    apply_plan,
    owner_selector,
    plan_workers,
    worker_labels,
)
from sedna_gm.workloads.local import LocalWorkloadRuntime

OWNER = WorkerOwner(
    api_version="sedna.io/v1alpha1",
    kind="JointInferenceService",
    name="ji",
    namespace="ns",
    uid="u1",
)


class RecordingMessenger:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, ResourceObject, dict[str, str]]] = []

    async def upsert(
        self, node_name: str, obj: ResourceObject, credentials: Mapping[str, str] | None = None
    ) -> None:
        self.calls.append(("upsert", node_name, obj.clone(), dict(credentials or {})))

    async def remove(self, node_name: str, obj: ResourceObject) -> None:
        self.calls.append(("remove", node_name, obj.clone(), {}))


class Nodes:
    def get_node(self, name: str) -> NodeInfo | None:
        return NodeInfo(
            name=name, connected=True, last_seen=None, labels={}, agent_address="10.0.0.7:9100"
        )

    def list_nodes(self) -> Sequence[NodeInfo]:
        return []


def _spec(node: str = "cloud-node", args: list[str] | None = None) -> WorkerSpec:
    return WorkerSpec(
        owner=OWNER,
        worker_type="cloud",
        node_name=node,
        command=["python3", "big.py"],
        args=args or [],
        labels=worker_labels(OWNER, "cloud"),
    )


def _state(name: str, phase: int, **kw: object) -> hub_service_pb2.WorkerState:
    return hub_service_pb2.WorkerState(worker_name=name, phase=phase, **kw)  # type: ignore[arg-type]


async def test_ensure_sends_worker_object_once(store: SqlResourceStore | None) -> None:
    messenger = RecordingMessenger()
    rt = LocalWorkloadRuntime(messenger, store=store)
    assert rt.mode is RuntimeMode.LOCAL
    status = await rt.ensure_worker("ji-cloud-abcde", _spec(), credentials={"ACCESS_KEY_ID": "AK"})
    assert status.phase is WorkerPhaseName.PENDING
    assert status.node_name == "cloud-node"
    assert len(messenger.calls) == 1
    op, node, obj, creds = messenger.calls[0]
    assert (op, node) == ("upsert", "cloud-node")
    assert (obj.kind, obj.api_version, obj.namespace, obj.name) == (
        "Worker",
        "runtime.sedna.io/v1",
        "ns",
        "ji-cloud-abcde",
    )
    assert obj.spec == _spec().model_dump(by_alias=True, mode="json")
    assert obj.owner_references[0].uid == "u1"
    assert obj.owner_references[0].controller
    assert creds == {"ACCESS_KEY_ID": "AK"}
    assert "AK" not in str(obj.spec)

    # Same spec: nothing sent again.
    await rt.ensure_worker("ji-cloud-abcde", _spec())
    assert len(messenger.calls) == 1
    # Changed spec: a new upsert, phase back to Pending.
    await rt.ensure_worker("ji-cloud-abcde", _spec(args=["--v2"]))
    assert len(messenger.calls) == 2
    assert messenger.calls[1][2].spec["args"] == ["--v2"]
    assert messenger.calls[1][3] == {"ACCESS_KEY_ID": "AK"}  # credentials remembered
    # Moved to another node: removed from the old one first.
    await rt.ensure_worker("ji-cloud-abcde", _spec(node="other"))
    assert [(c[0], c[1]) for c in messenger.calls[2:]] == [
        ("remove", "cloud-node"),
        ("upsert", "other"),
    ]


async def test_states_are_recorded_and_survive_restart(store: SqlResourceStore | None) -> None:
    messenger = RecordingMessenger()
    rt = LocalWorkloadRuntime(messenger, store=store)
    await rt.ensure_worker("w1", _spec())
    await rt.observe_worker_state(
        "cloud-node", _state("w1", types_pb2.WORKER_PHASE_RUNNING, restart_count=2)
    )
    await rt.observe_worker_state(
        "elsewhere", _state("w1", types_pb2.WORKER_PHASE_FAILED)
    )  # ignored
    await rt.observe_worker_state("cloud-node", _state("nobody", types_pb2.WORKER_PHASE_FAILED))
    [status] = await rt.list_workers(OWNER)
    assert (status.phase, status.restart_count) == (WorkerPhaseName.RUNNING, 2)
    await rt.observe_worker_state(
        "cloud-node",
        _state("w1", types_pb2.WORKER_PHASE_FAILED, exit_code=3, message="boom"),
        namespace="ns",
    )
    [status] = await rt.list_workers(OWNER)
    assert (status.phase, status.exit_code, status.message) == (WorkerPhaseName.FAILED, 3, "boom")
    if store is not None:
        restarted = LocalWorkloadRuntime(RecordingMessenger(), store=store)
        [again] = await restarted.list_workers(OWNER)
        assert again == status
        assert [o.name for o, _ in await restarted.desired_objects("cloud-node")] == ["w1"]
    await rt.delete_worker("ns", "w1")
    assert messenger.calls[-1][:2] == ("remove", "cloud-node")
    assert await rt.list_workers(OWNER) == []
    await rt.delete_worker("ns", "w1")  # absent: no error


async def test_last_termination_is_written_to_the_worker_status(
    store: SqlResourceStore | None,
) -> None:
    rt = LocalWorkloadRuntime(RecordingMessenger(), store=store)
    await rt.ensure_worker("w1", _spec())
    await rt.observe_worker_state(
        "cloud-node",
        _state(
            "w1",
            types_pb2.WORKER_PHASE_RUNNING,
            restart_count=1,
            last_exit_code=3,
            last_termination_reason="exited with code 3",
        ),
    )
    [(obj, _)] = await rt.desired_objects("cloud-node")
    assert obj.status == {
        "phase": "Running",
        "restartCount": 1,
        "message": "",
        "lastState": {"exitCode": 3, "reason": "exited with code 3"},
    }
    [status] = await rt.list_workers(OWNER)  # as a Pod's lastState.terminated.exitCode
    assert (status.phase, status.exit_code) == (WorkerPhaseName.RUNNING, 3)
    await rt.observe_worker_state("cloud-node", _state("w1", types_pb2.WORKER_PHASE_RUNNING))
    [(obj, _)] = await rt.desired_objects("cloud-node")
    assert "lastState" not in obj.status  # never ended yet: no last state
    [status] = await rt.list_workers(OWNER)
    assert status.exit_code is None


async def test_lifecycle_through_local_runtime() -> None:
    messenger = RecordingMessenger()
    rt = LocalWorkloadRuntime(messenger)
    desired = {"w1": DesiredWorker(_spec()), "w2": DesiredWorker(_spec(node="edge"))}
    plan = plan_workers("ns", desired, await rt.list_workers(OWNER), now=0)
    await apply_plan(rt, plan)
    observed = await rt.list_workers(OWNER)
    assert [s.name for s in observed] == ["w1", "w2"]
    assert plan_workers("ns", desired, observed, now=0).actions == ()


async def test_services_and_errors() -> None:
    rt = LocalWorkloadRuntime(RecordingMessenger())
    ep = await rt.ensure_service(
        "ns", "ji-cloud", owner_selector("JointInferenceService", "ji"), 5000
    )
    assert (ep.host, ep.port) == ("127.0.0.1", 5000)
    with_nodes = LocalWorkloadRuntime(RecordingMessenger(), nodes=Nodes())
    await with_nodes.ensure_worker("w1", _spec())
    ep = await with_nodes.ensure_service(
        "ns", "ji-cloud", owner_selector("JointInferenceService", "ji"), 5000
    )
    assert str(ep) == "10.0.0.7:5000"
    with pytest.raises(WorkloadError, match="port 0 is not in 1-65535"):
        await rt.ensure_service("ns", "s", {"a": "b"}, 0)
    with pytest.raises(WorkloadError, match=r"spec.nodeName is required"):
        await rt.ensure_worker("w", _spec(node=""))
