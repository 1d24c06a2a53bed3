"""The JointInferenceService controller on a store with the local runtime and fake nodes.

The runtime is the real LocalWorkloadRuntime (``Worker`` objects in the store); the nodes are
fakes: what a node's LC would report is fed to ``observe_worker_state`` and the report router.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from prometheus_client import CollectorRegistry

from sedna.api.common.v1 import types_pb2
from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.objects import ObjectKey, ResourceObject
from sedna.resources.wire import worker_phase_to_proto
from sedna.resources.worker import WorkerPhaseName
from sedna_gm.controllers import (
    CLEANUP_FINALIZER,
    Manager,
    MemoryEventRecorder,
    ReportRouter,
    find_condition,
    update_object,
)
from sedna_gm.controllers.jointinference import (
    JointInferenceController,
    setup_joint_inference_controller,
)
from sedna_gm.store.errors import NotFoundError
from sedna_gm.workloads import S3Secret, StaticSecretSource
from sedna_gm.workloads.local import LocalWorkloadRuntime

from .jointinference_support import env_of, model, service, template
from .workload_support import Messenger, Nodes, get_worker, started

KEY = ObjectKey("JointInferenceService", "default", "ji")
CLOUD = "ji-deployment-cloud"
EDGE = "ji-deployment-edge"
JI_KIND = "JointInferenceService"


@dataclass
class Env:
    store: Any
    runtime: LocalWorkloadRuntime
    router: ReportRouter
    recorder: MemoryEventRecorder
    messenger: Messenger
    nodes: Nodes
    secrets: StaticSecretSource
    registry: CollectorRegistry
    controller: JointInferenceController


@pytest.fixture
async def env(store: Any) -> AsyncIterator[Env]:
    messenger = Messenger()
    nodes = Nodes({"cloud": ("10.0.0.1", {}), "edge-1": ("10.0.0.2", {})})
    runtime = LocalWorkloadRuntime(messenger, store=store, nodes=nodes)
    manager = Manager(store)
    router = ReportRouter()
    recorder = MemoryEventRecorder()
    secrets = StaticSecretSource()
    registry = CollectorRegistry()
    controller, _ = setup_joint_inference_controller(
        manager,
        router,
        runtime=runtime,
        recorder=recorder,
        nodes=nodes,
        secrets=secrets,
        registry=registry,
        retry_interval=0.05,
        port_range=(26000, 26100),
        port_probe=lambda _: True,
    )
    async with started(manager):
        yield Env(store, runtime, router, recorder, messenger, nodes, secrets, registry, controller)


_worker = get_worker


async def _status(store: Any) -> dict[str, Any]:
    obj = await store.get(JI_KIND, "default", "ji")
    return dict(obj.status)


def _ready(status: dict[str, Any]) -> tuple[str, str, str]:
    cond = find_condition(status, "Ready") or {}
    return (str(cond.get("status")), str(cond.get("reason")), str(cond.get("message", "")))


async def _report_state(
    env: Env,
    node: str,
    name: str,
    phase: WorkerPhaseName,
    *,
    restarts: int = 0,
    message: str = "",
    exit_code: int = 0,
) -> None:
    state = hub_service_pb2.WorkerState(
        worker_name=name,
        phase=worker_phase_to_proto(phase),
        restart_count=restarts,
        message=message,
        exit_code=exit_code,
    )
    await env.runtime.observe_worker_state(node, state, namespace="default")


def _edge_report(**counters: Any) -> hub_service_pb2.NodeReport:
    info = Struct()
    info.update(counters)
    return hub_service_pb2.NodeReport(
        seq=1,
        owner=types_pb2.ObjectReference(kind=JI_KIND, namespace="default", name="ji"),
        worker=types_pb2.WorkerReport(
            worker_name=EDGE,
            namespace="default",
            owner_name="ji",
            owner_kind=JI_KIND,
            kind="inference",
            owner_info=info,
        ),
    )


async def _create_models(store: Any) -> None:
    await store.create(model("big", "/models/big.onnx"))
    await store.create(model("little", "/models/little.onnx"))


async def test_lifecycle_env_status_metrics_roll_and_delete(env: Env, eventually: Any) -> None:
    await _create_models(env.store)
    await env.store.create(service())
    port = await _created_with_the_env_contract(env, eventually)
    await _running_when_both_run(env, eventually)
    await _edge_counters_become_metrics(env)
    await _hem_edit_rolls_the_edge_worker(env, eventually)
    await _model_edit_rolls_the_cloud_worker(env, eventually, port)
    await _delete_removes_everything(env, eventually)


async def _created_with_the_env_contract(env: Env, eventually: Any) -> str:
    store = env.store

    async def both_created() -> bool:
        return await _worker(store, CLOUD) is not None and await _worker(store, EDGE) is not None

    await eventually(both_created, what="cloud and edge workers")
    cloud = await _worker(store, CLOUD)
    edge = await _worker(store, EDGE)
    assert cloud is not None
    assert edge is not None
    cloud_env, edge_env = env_of(cloud.spec), env_of(edge.spec)
    port = cloud_env["BIG_MODEL_BIND_PORT"]
    assert 26000 <= int(port) < 26100
    assert cloud.spec["nodeName"] == "cloud"
    assert edge.spec["nodeName"] == "edge-1"
    assert cloud_env["MODEL_URL"] == "/models/big.onnx"
    assert edge_env["MODEL_URL"] == "/models/little.onnx"
    # The edge worker reaches the cloud worker on its node's host and port.
    assert (edge_env["BIG_MODEL_IP"], edge_env["BIG_MODEL_PORT"]) == ("10.0.0.1", port)
    assert edge_env["HEM_NAME"] == "IBT"
    assert edge_env["HEM_PARAMETERS"] == '[{"key":"threshold_img","value":"0.9"}]'
    [ref] = cloud.owner_references
    assert (ref.kind, ref.name, ref.controller) == (JI_KIND, "ji", True)

    def sent() -> bool:
        calls = {c[:3] for c in env.messenger.calls}
        return {("upsert", "cloud", CLOUD), ("upsert", "edge-1", EDGE)} <= calls

    await eventually(sent, what="both workers sent to their nodes")

    async def pending() -> bool:
        status = await _status(store)
        return status.get("phase") == "Pending" and status.get("observedGeneration") == 1

    await eventually(pending, what="phase Pending")
    obj = await store.get(JI_KIND, "default", "ji")
    assert CLEANUP_FINALIZER in obj.finalizers
    assert obj.status["startTime"]
    assert _ready(obj.status)[1] == "CloudNotReady"
    return port


async def _running_when_both_run(env: Env, eventually: Any) -> None:
    await _report_state(env, "cloud", CLOUD, WorkerPhaseName.RUNNING)
    await _report_state(env, "edge-1", EDGE, WorkerPhaseName.RUNNING)

    async def running() -> bool:
        return (await _status(env.store)).get("phase") == "Running"

    await eventually(running, what="phase Running")
    status = await _status(env.store)
    assert (status["active"], status["failed"]) == (2, 0)
    assert _ready(status)[:2] == ("True", "Running")
    reasons = [e.reason for e in env.recorder.events_for(KEY)]
    assert reasons.count("Created") == 2
    assert "Running" in reasons


def _gauge(env: Env, metric: str) -> float | None:
    return env.registry.get_sample_value(
        "sedna_joint_inference_edge_metric",
        {"namespace": "default", "service": "ji", "metric": metric},
    )


async def _edge_counters_become_metrics(env: Env) -> None:
    await env.router.handle_report(
        "edge-1",
        _edge_report(
            inferenceNumber=10,
            hardExampleNumber=3,
            uploadCloudRatio=0.3,
            cloudFallbackNumber=0,
            startTime="2024-05-01 12:00:00",
            updateTime="2024-05-01 12:00:05",
        ),
    )
    status = await _status(env.store)
    assert status["metrics"] == [
        {"key": "cloudFallbackNumber", "value": "0"},
        {"key": "hardExampleNumber", "value": "3"},
        {"key": "inferenceNumber", "value": "10"},
        {"key": "uploadCloudRatio", "value": "0.3"},
    ]
    assert _gauge(env, "hardExampleNumber") == 3


async def _hem_edit_rolls_the_edge_worker(env: Env, eventually: Any) -> None:
    store = env.store
    before = len(env.messenger.calls)

    def new_threshold(o: ResourceObject) -> None:
        o.spec["edgeWorker"]["hardExampleMining"]["parameters"][0]["value"] = "0.5"

    await update_object(store, KEY, new_threshold)

    async def edge_rolled() -> bool:
        worker = await _worker(store, EDGE)
        sent = [c[:3] for c in env.messenger.calls[before:]]
        changed = worker is not None and '"0.5"' in env_of(worker.spec)["HEM_PARAMETERS"]
        return changed and ("upsert", "edge-1", EDGE) in sent

    await eventually(edge_rolled, what="edge worker rolled and resent to its node")
    assert ("upsert", "cloud", CLOUD) not in [c[:3] for c in env.messenger.calls[before:]]
    assert any(e.reason == "Rolled" and EDGE in e.message for e in env.recorder.events_for(KEY))

    async def observed_generation_2() -> bool:
        status = await _status(store)
        return status.get("observedGeneration") == 2 and status.get("phase") == "Pending"

    await eventually(observed_generation_2, what="generation 2 observed, edge restarting")


async def _model_edit_rolls_the_cloud_worker(env: Env, eventually: Any, port: str) -> None:
    # A new URL and format of the big model: its Model changed, not the service.
    def new_url(o: ResourceObject) -> None:
        o.spec["url"] = "/models/big-v2"
        o.spec["format"] = "pt"

    await update_object(env.store, ObjectKey("Model", "default", "big"), new_url)

    async def cloud_rolled() -> bool:
        worker = await _worker(env.store, CLOUD)
        if worker is None:
            return False
        env_now = env_of(worker.spec)
        return (env_now["MODEL_URL"], env_now.get("MODEL_FORMAT")) == ("/models/big-v2", "pt")

    await eventually(cloud_rolled, what="cloud worker rolled")
    cloud = await _worker(env.store, CLOUD)
    assert cloud is not None
    assert env_of(cloud.spec)["BIG_MODEL_BIND_PORT"] == port  # the port stays


async def _delete_removes_everything(env: Env, eventually: Any) -> None:
    store = env.store
    await store.delete(JI_KIND, "default", "ji")

    async def gone() -> bool:
        try:
            await store.get(JI_KIND, "default", "ji")
        except NotFoundError:
            return True
        return False

    await eventually(gone, what="service deleted")
    assert await _worker(store, CLOUD) is None
    assert await _worker(store, EDGE) is None
    removed = {c[:3] for c in env.messenger.calls if c[0] == "remove"}
    assert {("remove", "cloud", CLOUD), ("remove", "edge-1", EDGE)} <= removed
    assert _gauge(env, "hardExampleNumber") is None
    assert [e.reason for e in env.recorder.events_for(KEY)].count("Deleted") == 1


async def test_missing_model_is_named_and_the_service_starts_once_it_exists(
    env: Env, eventually: Any
) -> None:
    store = env.store
    await store.create(model("big", "/models/big.onnx"))
    await store.create(service())

    async def waiting() -> bool:
        return _ready(await _status(store))[1] == "ModelNotFound"

    await eventually(waiting, what="ModelNotFound")
    status = await _status(store)
    assert status["phase"] == "Pending"
    assert "Model default/little (spec.edgeWorker.model.name) not found" in _ready(status)[2]
    assert await _worker(store, CLOUD) is None
    assert any(e.reason == "ModelNotFound" for e in env.recorder.events_for(KEY))

    await store.create(model("little", "/models/little.onnx"))

    async def created() -> bool:
        return await _worker(store, EDGE) is not None

    await eventually(created, what="workers created once the Model exists")

    async def models_ready() -> bool:
        models = find_condition(await _status(store), "ModelsReady") or {}
        return models.get("status") == "True"

    await eventually(models_ready, what="ModelsReady")
    found = [e for e in env.recorder.events_for(KEY) if e.reason == "ModelNotFound"]
    assert len(found) == 1


async def test_failed_worker_fails_the_service_until_it_runs_again(
    env: Env, eventually: Any
) -> None:
    store = env.store
    await _create_models(store)
    await store.create(service())

    async def created() -> bool:
        return await _worker(store, EDGE) is not None

    await eventually(created, what="workers")
    await _report_state(env, "cloud", CLOUD, WorkerPhaseName.RUNNING)
    # The edge process keeps crashing: the LC restarts it with back-off (phase Pending).
    await _report_state(
        env,
        "edge-1",
        EDGE,
        WorkerPhaseName.PENDING,
        restarts=3,
        exit_code=1,
        message="exited with code 1; back-off: restarting in 4s (Always)",
    )

    async def failed() -> bool:
        return (await _status(store)).get("phase") == "Failed"

    await eventually(failed, what="phase Failed")
    status = await _status(store)
    ready = _ready(status)
    assert ready[1] == "WorkerFailed"
    assert f"edge worker {EDGE}: restarted 3 times: exited with code 1" in ready[2]
    edge_ready = find_condition(status, "EdgeReady")
    assert edge_ready is not None
    assert edge_ready["reason"] == "CrashLoopBackOff"
    assert (status["active"], status["failed"]) == (1, 1)
    warnings = [e for e in env.recorder.events_for(KEY) if e.type == "Warning"]
    assert any(e.reason == "WorkerFailed" for e in warnings)

    # Upstream's Failed is terminal; here the service recovers when the worker runs again.
    await _report_state(env, "edge-1", EDGE, WorkerPhaseName.RUNNING, restarts=4)

    async def running() -> bool:
        return (await _status(store)).get("phase") == "Running"

    await eventually(running, what="phase Running again")


async def test_unknown_node_and_unplaceable_cloud_worker(env: Env, eventually: Any) -> None:
    store = env.store
    await _create_models(store)
    # The cloud worker needs a gpu node (none yet); the edge worker names an unknown node.
    cloud_template = template(["serve"], nodeSelector={"gpu": "true"})
    await store.create(service(edge_node="edge-9", cloud_template=cloud_template))

    async def waiting() -> bool:
        status = await _status(store)
        edge = find_condition(status, "EdgeReady") or {}
        return edge.get("reason") == "WaitingForCloud"

    await eventually(waiting, what="edge waits for the cloud worker's node")
    status = await _status(store)
    cloud = find_condition(status, "CloudReady") or {}
    assert cloud["reason"] == "Unschedulable"
    assert "no node matches nodeSelector {gpu: true}" in cloud["message"]
    assert await _worker(store, EDGE) is None

    # A gpu node appears: the cloud worker is placed there and the edge worker created with
    # its address; edge-9 is still unknown.
    env.nodes.nodes["gpu-1"] = ("10.0.0.9", {"gpu": "true"})

    async def edge_created() -> bool:
        return await _worker(store, EDGE) is not None

    await eventually(edge_created, what="edge created once the cloud worker is placed")
    edge = await _worker(store, EDGE)
    cloud_worker = await _worker(store, CLOUD)
    assert edge is not None
    assert cloud_worker is not None
    assert cloud_worker.spec["nodeName"] == "gpu-1"
    assert env_of(edge.spec)["BIG_MODEL_IP"] == "10.0.0.9"

    async def node_not_found() -> bool:
        return _ready(await _status(store))[1] == "NodeNotFound"

    await eventually(node_not_found, what="NodeNotFound for edge-9")
    assert "'edge-9' has not registered" in _ready(await _status(store))[2]


async def test_invalid_template_fails_without_running_anything(env: Env, eventually: Any) -> None:
    store = env.store
    await _create_models(store)
    await store.create(service(edge_template=template(None, node="edge-1")))

    async def invalid() -> bool:
        return (await _status(store)).get("phase") == "Failed"

    await eventually(invalid, what="phase Failed")
    valid = find_condition(await _status(store), "Valid")
    assert valid is not None
    assert valid["reason"] == "InvalidSpec"
    assert "spec.edgeWorker.template.spec.containers[0].command" in valid["message"]
    assert await _worker(store, CLOUD) is None


async def test_local_runtime_runs_one_process_and_says_the_hpa_is_ignored(
    env: Env, eventually: Any
) -> None:
    store = env.store
    await _create_models(store)
    obj = service()
    obj.spec["edgeWorker"]["hpa"] = {"minReplicas": 2, "maxReplicas": 4}
    await store.create(obj)

    async def pending() -> bool:
        return (await _status(store)).get("observedGeneration") == 1

    await eventually(pending, what="the first status")
    edge = await _worker(store, EDGE)
    assert edge is not None  # one Worker (one process), whatever the replicas
    edge_ready = find_condition(await _status(store), "EdgeReady") or {}
    assert edge_ready["message"].endswith(
        "; hpa is ignored by the local runtime: it runs one process, not 2 to 4 replicas"
    )
    cloud_ready = find_condition(await _status(store), "CloudReady") or {}
    assert "hpa" not in cloud_ready["message"]

    await _report_state(env, "cloud", CLOUD, WorkerPhaseName.RUNNING)
    await _report_state(env, "edge-1", EDGE, WorkerPhaseName.RUNNING)

    async def running() -> bool:
        return (await _status(store)).get("phase") == "Running"

    await eventually(running, what="phase Running")
    edge_ready = find_condition(await _status(store), "EdgeReady") or {}
    assert edge_ready["status"] == "True"
    assert "hpa is ignored by the local runtime" in edge_ready["message"]
    ignored = [e for e in env.recorder.events_for(KEY) if e.reason == "HPAIgnored"]
    assert len(ignored) == 1  # once per generation, however often it reconciles
    assert (ignored[0].type, ignored[0].count) == ("Warning", 1)
    assert (
        ignored[0].message == "edge worker: hpa is ignored by the local runtime (one process each)"
    )


async def test_s3_model_credentials_reach_the_node_not_the_store(env: Env, eventually: Any) -> None:
    store = env.store
    await store.create(model("big", "s3://models/big.onnx", credential="s3"))
    await store.create(model("little", "/models/little.onnx"))
    await store.create(service())

    async def secret_missing() -> bool:
        return _ready(await _status(store))[1] == "SecretNotFound"

    await eventually(secret_missing, what="SecretNotFound")
    env.secrets.put(
        "default",
        S3Secret(name="s3", endpoint="minio:9000", access_key_id="AK", secret_access_key="SK"),
    )

    def sent() -> list[dict[str, str]]:
        return [c[3] for c in env.messenger.calls if c[:3] == ("upsert", "cloud", CLOUD)]

    await eventually(lambda: bool(sent()), what="cloud worker sent once the Secret exists")
    assert sent()[-1] == {"ACCESS_KEY_ID": "AK", "SECRET_ACCESS_KEY": "SK"}
    cloud = await _worker(store, CLOUD)
    assert cloud is not None
    assert env_of(cloud.spec)["S3_ENDPOINT_URL"] == "https://minio:9000"
    assert "SK" not in str(cloud.spec)


async def test_two_services_get_different_ports(env: Env, eventually: Any) -> None:
    store = env.store
    await _create_models(store)
    await store.create(service("one"))
    await store.create(service("two"))

    async def both() -> bool:
        return all(
            [
                await _worker(store, "one-deployment-cloud"),
                await _worker(store, "two-deployment-cloud"),
            ]
        )

    await eventually(both, what="two cloud workers")
    one = await _worker(store, "one-deployment-cloud")
    two = await _worker(store, "two-deployment-cloud")
    assert one is not None
    assert two is not None
    assert env_of(one.spec)["BIG_MODEL_BIND_PORT"] != env_of(two.spec)["BIG_MODEL_BIND_PORT"]


async def test_reports_of_other_kinds_or_unknown_services_are_dropped(
    env: Env, eventually: Any
) -> None:
    # No such service: the router drops the report (the node must not resend it forever).
    await env.router.handle_report("edge-1", _edge_report(inferenceNumber=1))
    await _create_models(env.store)
    await env.store.create(service())

    async def reconciled() -> bool:
        return (await _status(env.store)).get("observedGeneration") == 1

    await eventually(reconciled, what="the service reconciled")
    report = _edge_report(inferenceNumber=1)
    report.worker.kind = "train"
    await env.router.handle_report("edge-1", report)
    assert "metrics" not in await _status(env.store)
    await env.router.handle_report("edge-1", _edge_report(startTime="now"))
    assert "metrics" not in await _status(env.store)  # nothing but the dropped fields
