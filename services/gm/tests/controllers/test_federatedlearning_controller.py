"""The FederatedLearningJob controller on a store with the local runtime and fake nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct

from sedna.api.common.v1 import types_pb2
from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.federatedlearning import FederatedLearningJobStatus, SampleCount
from sedna.resources.objects import ResourceObject
from sedna.resources.wire import worker_phase_to_proto
from sedna.resources.worker import WorkerPhaseName
from sedna_gm.controllers import Manager, MemoryEventRecorder, ReportRouter, find_condition
from sedna_gm.controllers.federatedlearning import setup_federated_learning_controller
from sedna_gm.controllers.federatedlearning.workers import aggregator_name, trainer_name
from sedna_gm.store.errors import NotFoundError
from sedna_gm.workloads.local import LocalWorkloadRuntime

from .jointinference_support import env_of, model, template
from .workload_support import Messenger, Nodes, get_worker, started

KIND = "FederatedLearningJob"
AGG = aggregator_name("fl")
T0 = trainer_name("fl", 0, "d1")
T1 = trainer_name("fl", 1, "d2")
CMD = ["python3", "-c", "print('x')"]


def dataset(name: str, node: str) -> ResourceObject:
    spec = {"url": f"/data/{name}.txt", "format": "txt", "nodeName": node}
    return ResourceObject(kind="Dataset", name=name, namespace="default", spec=spec)


def job() -> ResourceObject:
    return ResourceObject(
        kind=KIND,
        name="fl",
        namespace="default",
        spec={
            "aggregationWorker": {"model": {"name": "m"}, "template": template(CMD, node="cloud")},
            "trainingWorkers": [
                {"dataset": {"name": "d1"}, "template": template(CMD)},
                {"dataset": {"name": "d2"}, "template": template(CMD)},
            ],
        },
    )


@pytest.fixture
async def env(store: Any) -> AsyncIterator[tuple[Any, LocalWorkloadRuntime, ReportRouter]]:
    nodes = Nodes({n: (f"10.0.0.{i}", {}) for i, n in enumerate(("cloud", "e1", "e2"), 1)})
    runtime = LocalWorkloadRuntime(Messenger(), store=store, nodes=nodes)
    manager = Manager(store)
    router = ReportRouter()
    setup_federated_learning_controller(
        manager,
        router,
        runtime=runtime,
        recorder=MemoryEventRecorder(),
        nodes=nodes,
        retry_interval=0.05,
        port_range=(27000, 27100),
        port_probe=lambda _: True,
    )
    async with started(manager):
        yield store, runtime, router


_worker = get_worker


async def _status(store: Any) -> dict[str, Any]:
    return dict((await store.get(KIND, "default", "fl")).status)


async def _state(
    runtime: LocalWorkloadRuntime, node: str, name: str, phase: Any, **kw: Any
) -> None:
    state = hub_service_pb2.WorkerState(worker_name=name, phase=worker_phase_to_proto(phase), **kw)
    await runtime.observe_worker_state(node, state, namespace="default")


def _train_report(worker: str, round_: int, samples: int, acc: float) -> Any:
    info = Struct()
    info.update({"currentRound": round_, "sampleCount": samples})
    result = Struct()
    result.update({"metrics": {"accuracy": acc}})
    return hub_service_pb2.NodeReport(
        seq=1,
        owner=types_pb2.ObjectReference(kind=KIND, namespace="default", name="fl"),
        worker=types_pb2.WorkerReport(
            worker_name=worker,
            namespace="default",
            owner_name="fl",
            owner_kind=KIND,
            kind="train",
            owner_info=info,
            results=[result],
        ),
    )


async def test_missing_dataset_then_train_report_and_succeed(env: Any, eventually: Any) -> None:
    store, runtime, router = env
    await store.create(model("m", "/models/fl"))
    await store.create(dataset("d1", "e1"))
    await store.create(job())

    async def names_missing() -> bool:
        cond = find_condition(await _status(store), "ResourcesReady") or {}
        return cond.get("reason") == "DatasetNotFound" and "default/d2" in cond["message"]

    await eventually(names_missing, what="ResourcesReady names the missing Dataset")
    assert (await _status(store))["phase"] == "Pending"
    await store.create(dataset("d2", "e2"))
    await eventually(lambda: _worker(store, AGG), what="the aggregator")
    agg = await _worker(store, AGG)
    assert agg is not None
    agg_env = env_of(agg.spec)
    port = agg_env["AGG_BIND_PORT"]
    assert 27000 <= int(port) < 27100
    assert agg_env["PARTICIPANTS_COUNT"] == "2"
    assert agg_env["JOB_NAME"] == "fl"
    assert agg_env["WORKER_NAME"] == AGG
    assert agg_env["TRANSMITTER"] == "ws"
    await _state(runtime, "cloud", AGG, WorkerPhaseName.RUNNING)

    async def trainers() -> bool:
        return all([await _worker(store, n) for n in (T0, T1)])

    await eventually(trainers, what="both trainers")
    t0 = await _worker(store, T0)
    assert t0 is not None
    e = env_of(t0.spec)
    assert (e["AGG_IP"], e["AGG_PORT"]) == ("10.0.0.1", port)
    assert e["DATASET_NAME"] == "d1"
    assert e["TRAIN_DATASET_URL"] == "/data/d1.txt"
    assert e["MODEL_NAME"] == "m"
    assert e["MODEL_URL"] == "/models/fl"
    assert t0.spec["nodeName"] == "e1"
    for node, name in (("e1", T0), ("e2", T1)):
        await _state(runtime, node, name, WorkerPhaseName.RUNNING)

    async def running() -> bool:
        status = await _status(store)
        return status.get("phase") == "Running" and status.get("active") == 3

    await eventually(running, what="Running")
    await _report_sets_round_samples_and_model_metrics(store, router)

    await _state(runtime, "cloud", AGG, WorkerPhaseName.SUCCEEDED)
    for node, name in (("e1", T0), ("e2", T1)):
        await _state(runtime, node, name, WorkerPhaseName.SUCCEEDED)

    async def succeeded() -> bool:
        status = await _status(store)
        return status.get("phase") == "Succeeded" and bool(status.get("completionTime"))

    await eventually(succeeded, what="Succeeded")
    assert (find_condition(await _status(store), "Complete") or {})["status"] == "True"

    await store.delete(KIND, "default", "fl")

    async def gone() -> bool:
        left = [await _worker(store, n) for n in (AGG, T0, T1)]
        try:
            await store.get(KIND, "default", "fl")
        except NotFoundError:
            return not any(left)
        return False

    await eventually(gone, what="workers and job removed")


async def test_a_failed_trainer_fails_the_job_naming_it(env: Any, eventually: Any) -> None:
    store, runtime, _ = env
    await store.create(model("m", "/models/fl"))
    await store.create(dataset("d1", "e1"))
    await store.create(dataset("d2", "e2"))
    spec = job()
    spec.spec["trainingWorkers"][1]["template"]["spec"]["restartPolicy"] = "Never"
    await store.create(spec)
    await eventually(lambda: _worker(store, AGG), what="the aggregator")
    await _state(runtime, "cloud", AGG, WorkerPhaseName.RUNNING)
    await eventually(lambda: _worker(store, T1), what="trainer 1")
    await _state(runtime, "e2", T1, WorkerPhaseName.FAILED, exit_code=3, message="OOM")

    async def failed() -> bool:
        return (await _status(store)).get("phase") == "Failed"

    await eventually(failed, what="Failed")
    cond = find_condition(await _status(store), "Failed") or {}
    assert cond["reason"] == "TrainerFailed"
    assert T1 in cond["message"]
    assert "node e2" in cond["message"]
    assert "OOM" in cond["message"]


async def _report_sets_round_samples_and_model_metrics(store: Any, router: ReportRouter) -> None:
    await router.handle_report("e1", _train_report(T0, 2, 120, 0.8))
    status = await _status(store)
    assert status["currentRound"] == 2
    assert status["sampleCounts"] == [{"nodeName": "e1", "workerName": T0, "sampleCount": 120}]
    # The shape the CRD keeps (a real API server prunes unknown status fields).
    typed = FederatedLearningJobStatus.model_validate(status)
    assert typed.sample_counts == [SampleCount(node_name="e1", worker_name=T0, sample_count=120)]
    assert typed.model_dump(exclude_none=True)["sampleCounts"] == status["sampleCounts"]
    assert "round 2" in (find_condition(status, "Training") or {})["message"]
    m = await store.get("Model", "default", "m")
    assert m.status["metrics"] == [{"key": "accuracy", "value": "0.8"}]
