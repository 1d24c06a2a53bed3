"""LocalWorkloadRuntime placement by nodeSelector/affinity over a fake node directory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sedna.api.common.v1 import types_pb2
from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.objects import ResourceObject
from sedna.resources.worker import WorkerOwner, WorkerPhaseName, WorkerSpec
from sedna_gm.core.ports import NodeInfo
from sedna_gm.store.sql import SqlResourceStore
from sedna_gm.workloads import DesiredWorker, apply_plan, plan_workers, worker_labels
from sedna_gm.workloads.local import PLACEMENT_ANNOTATION, LocalWorkloadRuntime
from sedna_gm.workloads.placement import PlacementError

OWNER = WorkerOwner(
    api_version="sedna.io/v1alpha1",
    kind="FederatedLearningJob",
    name="fl",
    namespace="ns",
    uid="u1",
)
OTHER = OWNER.model_copy(update={"name": "other", "uid": "u2"})
REQ = "requiredDuringSchedulingIgnoredDuringExecution"
NOW = datetime(2024, 1, 1, tzinfo=UTC)


class Messenger:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.objects: list[ResourceObject] = []

    async def upsert(
        self, node_name: str, obj: ResourceObject, credentials: Mapping[str, str] | None = None
    ) -> None:
        self.calls.append(("upsert", node_name, obj.name))
        self.objects.append(obj.clone())

    async def remove(self, node_name: str, obj: ResourceObject) -> None:
        self.calls.append(("remove", node_name, obj.name))

    def take(self) -> list[tuple[str, str, str]]:
        calls, self.calls = self.calls, []
        return calls


class Directory:
    """A NodeDirectory the test edits: name -> (labels, connected, heard from)."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}

    def add(
        self, name: str, labels: Mapping[str, str] | None = None, *, connected: bool = True
    ) -> None:
        self.nodes[name] = NodeInfo(
            name=name, connected=connected, last_seen=NOW, labels=dict(labels or {})
        )

    def unknown(self, name: str) -> None:
        """A node known from a stored record only: never heard from since the GM started."""
        self.nodes[name] = NodeInfo(name=name, connected=False, last_seen=None, labels={})

    def get_node(self, name: str) -> NodeInfo | None:
        return self.nodes.get(name)

    def list_nodes(self) -> Sequence[NodeInfo]:
        return [self.nodes[n] for n in sorted(self.nodes)]


def _spec(
    *,
    owner: WorkerOwner = OWNER,
    node: str = "",
    args: list[str] | None = None,
    **pod: Any,
) -> WorkerSpec:
    return WorkerSpec(
        owner=owner,
        worker_type="train",
        node_name=node,
        command=["python3", "train.py"],
        args=args or [],
        labels=worker_labels(owner, "train"),
        template={"spec": {"containers": [{"name": "train", "image": "x"}], **pod}},
    )


def _affinity(*expressions: dict[str, Any]) -> dict[str, Any]:
    return {"nodeAffinity": {REQ: {"nodeSelectorTerms": [{"matchExpressions": list(expressions)}]}}}


async def test_pending_until_a_matching_node_appears(store: SqlResourceStore | None) -> None:
    messenger, nodes = Messenger(), Directory()
    nodes.add("cloud", {"gpu": "false"})
    nodes.add("edge-1")
    rt = LocalWorkloadRuntime(messenger, store=store, nodes=nodes)
    spec = _spec(nodeSelector={"gpu": "true"})

    status = await rt.ensure_worker("fl-train-a", spec)
    assert (status.phase, status.node_name) == (WorkerPhaseName.PENDING, "")
    assert status.message == (
        "no node matches nodeSelector {gpu: true}: nodes cloud (gpu=false), edge-1 (no gpu label)"
    )
    assert messenger.take() == []
    assert await rt.desired_objects("cloud") == []
    # Reconciles while nothing changed: still pending, nothing sent.
    assert (await rt.ensure_worker("fl-train-a", spec)).node_name == ""
    [listed] = await rt.list_workers(OWNER)
    assert listed.message == status.message
    assert messenger.take() == []

    nodes.add("edge-2", {"gpu": "true"})
    [listed] = await rt.list_workers(OWNER)  # the next reconcile places it
    assert (listed.node_name, listed.phase, listed.message) == (
        "edge-2",
        WorkerPhaseName.PENDING,
        "",
    )
    assert messenger.take() == [("upsert", "edge-2", "fl-train-a")]
    sent = messenger.objects[-1]
    assert sent.spec["nodeName"] == "edge-2"
    assert sent.annotations[PLACEMENT_ANNOTATION] == "scheduled"
    assert [o.name for o, _ in await rt.desired_objects("edge-2")] == ["fl-train-a"]

    # The node's reports reach the worker placed on it.
    await rt.observe_worker_state(
        "edge-2",
        hub_service_pb2.WorkerState(worker_name="fl-train-a", phase=types_pb2.WORKER_PHASE_RUNNING),
    )
    assert (await rt.list_workers(OWNER))[0].phase is WorkerPhaseName.RUNNING


async def test_choice_is_recorded_and_stable_across_restarts(tmp_path: Path) -> None:
    store = SqlResourceStore(f"sqlite+aiosqlite:///{tmp_path / 'gm.db'}")
    await store.start()
    nodes = Directory()
    nodes.add("edge-2", {"gpu": "true"})
    rt = LocalWorkloadRuntime(Messenger(), store=store, nodes=nodes)
    spec = _spec(nodeSelector={"gpu": "true"})
    assert (await rt.ensure_worker("fl-train-a", spec)).node_name == "edge-2"

    # After a GM restart a better-ranked node exists; the worker stays where it was.
    nodes.add("a-gpu", {"gpu": "true"})
    messenger = Messenger()
    restarted = LocalWorkloadRuntime(messenger, store=store, nodes=nodes)
    assert (await restarted.ensure_worker("fl-train-a", spec)).node_name == "edge-2"
    assert [s.node_name for s in await restarted.list_workers(OWNER)] == ["edge-2"]
    assert messenger.take() == []
    stored = await store.get("Worker", "ns", "fl-train-a")
    assert stored.spec["nodeName"] == "edge-2"
    await store.close()


async def test_spread_connected_first_fewest_workers_then_name(
    store: SqlResourceStore | None,
) -> None:
    nodes = Directory()
    nodes.add("a", connected=False)
    nodes.add("b")
    nodes.add("c")
    nodes.unknown("d")  # not heard from since the GM started: labels unknown, no candidate
    rt = LocalWorkloadRuntime(Messenger(), store=store, nodes=nodes)
    placed = [(await rt.ensure_worker(f"w{i}", _spec())).node_name for i in range(4)]
    assert placed == ["b", "c", "b", "c"]
    # Finished workers do not count as load.
    await rt.observe_worker_state(
        "b", hub_service_pb2.WorkerState(worker_name="w0", phase=types_pb2.WORKER_PHASE_SUCCEEDED)
    )
    await rt.observe_worker_state(
        "b", hub_service_pb2.WorkerState(worker_name="w2", phase=types_pb2.WORKER_PHASE_FAILED)
    )
    assert (await rt.ensure_worker("w4", _spec())).node_name == "b"
    # Only the disconnected node fits: it gets the worker (delivered when it reconnects).
    hostname = {"key": "kubernetes.io/hostname", "operator": "In", "values": ["a", "d"]}
    only_a = _spec(affinity=_affinity(hostname))
    assert (await rt.ensure_worker("w5", only_a)).node_name == "a"


async def test_required_affinity_and_preferred_tie_break(store: SqlResourceStore | None) -> None:
    nodes = Directory()
    nodes.add("edge-1", {"zone": "a", "cores": "4"})
    nodes.add("edge-2", {"zone": "b", "cores": "16"})
    nodes.add("edge-3", {"zone": "c", "cores": "32", "ssd": ""})
    rt = LocalWorkloadRuntime(Messenger(), store=store, nodes=nodes)
    affinity = _affinity(
        {"key": "zone", "operator": "NotIn", "values": ["a"]},
        {"key": "cores", "operator": "Gt", "values": ["8"]},
    )
    assert (await rt.ensure_worker("w1", _spec(affinity=affinity))).node_name == "edge-2"
    affinity["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] = [
        {"weight": 1, "preference": {"matchExpressions": [{"key": "ssd", "operator": "Exists"}]}}
    ]
    assert (await rt.ensure_worker("w2", _spec(affinity=affinity))).node_name == "edge-3"
    by_name = _affinity({"key": "kubernetes.io/hostname", "operator": "In", "values": ["edge-1"]})
    assert (await rt.ensure_worker("w3", _spec(affinity=by_name))).node_name == "edge-1"


async def test_roll_keeps_the_node_while_it_fits(store: SqlResourceStore | None) -> None:
    messenger, nodes = Messenger(), Directory()
    nodes.add("edge-1", {"gpu": "true"})
    nodes.add("edge-2", {"gpu": "true"})
    rt = LocalWorkloadRuntime(messenger, store=store, nodes=nodes)
    await rt.ensure_worker("other-w", _spec(owner=OTHER))  # edge-1 now has a worker
    assert (await rt.ensure_worker("w", _spec(nodeSelector={"gpu": "true"}))).node_name == "edge-2"
    messenger.take()
    await rt.ensure_worker("other-w2", _spec(owner=OTHER, node="edge-2"))
    await rt.ensure_worker("other-w3", _spec(owner=OTHER, node="edge-2"))
    messenger.take()
    # A new spec: edge-2 is busier now, but the worker does not move needlessly.
    rolled = await rt.ensure_worker("w", _spec(args=["--v2"], nodeSelector={"gpu": "true"}))
    assert rolled.node_name == "edge-2"
    assert messenger.take() == [("upsert", "edge-2", "w")]
    # A spec edge-2 no longer fits: removed there, sent to edge-1.
    nodes.add("edge-2", {"gpu": "false"})
    moved = await rt.ensure_worker("w", _spec(args=["--v3"], nodeSelector={"gpu": "true"}))
    assert moved.node_name == "edge-1"
    assert messenger.take() == [("remove", "edge-2", "w"), ("upsert", "edge-1", "w")]
    # A spec nothing fits: removed from its node, pending with the reason.
    pending = await rt.ensure_worker("w", _spec(args=["--v4"], nodeSelector={"gpu": "h100"}))
    assert (pending.node_name, pending.message) == (
        "",
        "no node matches nodeSelector {gpu: h100}: nodes edge-1 (gpu=true), edge-2 (gpu=false)",
    )
    assert messenger.take() == [("remove", "edge-1", "w")]
    await rt.delete_worker("ns", "w")
    assert messenger.take() == []  # on no node: nothing to remove


async def test_node_name_wins_and_is_recorded(store: SqlResourceStore | None) -> None:
    messenger, nodes = Messenger(), Directory()
    nodes.add("cloud", {"gpu": "false"})
    rt = LocalWorkloadRuntime(messenger, store=store, nodes=nodes)
    status = await rt.ensure_worker("w", _spec(node="cloud", nodeSelector={"gpu": "true"}))
    assert status.node_name == "cloud"
    assert messenger.objects[-1].annotations[PLACEMENT_ANNOTATION] == "nodeName"
    # Unknown nodes too: upstream's nodeName is used as is.
    assert (await rt.ensure_worker("w2", _spec(node="far-away"))).node_name == "far-away"


async def test_resync_of_a_new_node_carries_its_pending_workers(
    store: SqlResourceStore | None,
) -> None:
    messenger, nodes = Messenger(), Directory()
    rt = LocalWorkloadRuntime(messenger, store=store, nodes=nodes)
    await rt.ensure_worker("w", _spec(nodeSelector={"zone": "a"}))
    await rt.ensure_worker("v", _spec(owner=OTHER, nodeSelector={"zone": "b"}))
    [status] = await rt.list_workers(OWNER)
    assert status.message == (
        "no node matches nodeSelector {zone: a}: no node has connected to the GlobalManager yet"
    )
    # The hub asks for edge-1's desired objects when it connects (full resync).
    nodes.add("edge-1", {"zone": "a"})
    objects = await rt.desired_objects("edge-1")
    assert [(o.name, o.spec["nodeName"]) for o, _ in objects] == [("w", "edge-1")]
    assert messenger.take() == []  # delivered by the resync itself
    nodes.add("edge-2", {"zone": "b"})
    assert await rt.place_pending() == 1
    assert messenger.take() == [("upsert", "edge-2", "v")]
    assert await rt.place_pending() == 0


async def test_lifecycle_counts_unplaced_workers_as_pending() -> None:
    nodes = Directory()
    rt = LocalWorkloadRuntime(Messenger(), nodes=nodes)
    desired = {"w": DesiredWorker(_spec(nodeSelector={"gpu": "true"}))}
    await apply_plan(rt, plan_workers("ns", desired, await rt.list_workers(OWNER), now=0))
    plan = plan_workers("ns", desired, await rt.list_workers(OWNER), now=0)
    assert plan.actions == ()
    assert (plan.summary.pending, plan.summary.active) == (1, 1)
    assert plan.summary.workers["w"].message.startswith("no node matches nodeSelector")
    nodes.add("gpu-1", {"gpu": "true"})
    observed = await rt.list_workers(OWNER)
    assert observed[0].node_name == "gpu-1"
    assert plan_workers("ns", desired, observed, now=0).actions == ()


async def test_services_skip_unplaced_workers_and_bad_selectors_fail() -> None:
    nodes = Directory()
    rt = LocalWorkloadRuntime(Messenger(), nodes=nodes)
    await rt.ensure_worker("w", _spec(nodeSelector={"gpu": "true"}))
    endpoint = await rt.ensure_service("ns", "svc", worker_labels(OWNER, "train"), 5000)
    assert endpoint.host == "127.0.0.1"
    with pytest.raises(PlacementError, match=r"spec\.template\.spec\.nodeSelector\.gpu: true"):
        await rt.ensure_worker("bad", _spec(nodeSelector={"gpu": True}))
