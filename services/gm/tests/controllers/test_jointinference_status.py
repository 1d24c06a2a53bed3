"""A JointInferenceService's phase and conditions from its workers, and the edge gauges."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from sedna.resources.objects import ObjectKey
from sedna.resources.worker import WorkerPhaseName
from sedna_gm.controllers.jointinference.metrics import EdgeMetrics
from sedna_gm.controllers.jointinference.status import (
    ModelProblem,
    State,
    classify,
    invalid_status,
    models_status,
    service_status,
)
from sedna_gm.workloads import WorkerStatus


def _status(phase: WorkerPhaseName, **kw: object) -> WorkerStatus:
    return WorkerStatus(name="w", namespace="default", phase=phase, **kw)  # type: ignore[arg-type]


def test_classify_running_pending_and_failed_workers() -> None:
    running = classify("cloud", "w", _status(WorkerPhaseName.RUNNING, node_name="cloud"))
    assert (running.state, running.reason, running.message) == (
        State.RUNNING,
        "WorkerRunning",
        "running on node cloud",
    )
    assert classify("cloud", "w", None).reason == "WorkerPending"
    assert classify("edge", "w", None, waiting="no address").reason == "WaitingForCloud"
    deleting = _status(WorkerPhaseName.RUNNING, deleting=True)
    assert classify("edge", "w", deleting).reason == "WorkerRolling"

    failed = _status(WorkerPhaseName.FAILED, exit_code=2)
    retrying = classify("edge", "w", failed)
    assert (retrying.state, retrying.reason) == (State.PENDING, "WorkerRestarting")
    given_up = classify("edge", "w", failed, gave_up=True)
    assert (given_up.state, given_up.reason) == (State.FAILED, "WorkerFailed")
    assert given_up.summary == "edge worker w: exited with code 2"

    exited = classify("cloud", "w", _status(WorkerPhaseName.SUCCEEDED, exit_code=0))
    assert (exited.state, exited.reason) == (State.FAILED, "WorkerExited")

    looping = _status(WorkerPhaseName.PENDING, restart_count=3, message="exited with code 1")
    crash = classify("cloud", "w", looping, crash_loop_restarts=3)
    assert (crash.state, crash.reason) == (State.FAILED, "CrashLoopBackOff")
    assert "restarted 3 times: exited with code 1" in crash.message
    assert classify("cloud", "w", looping, crash_loop_restarts=4).state is State.PENDING


def test_classify_nodes_in_the_local_mode() -> None:
    def known(node: str) -> bool:
        return node == "cloud"

    missing = classify(
        "edge", "w", _status(WorkerPhaseName.PENDING, node_name="edge-9"), node_known=known
    )
    assert missing.reason == "NodeNotFound"
    assert "'edge-9' has not registered" in missing.message
    assert classify("edge", "w", None, node_known=known, template_node="edge-9").reason == (
        "NodeNotFound"
    )
    unplaced = _status(WorkerPhaseName.PENDING, message="no node matches nodeSelector {gpu: x}")
    got = classify("cloud", "w", unplaced, node_known=known)
    assert (got.reason, got.message) == ("Unschedulable", "no node matches nodeSelector {gpu: x}")


def _conditions(result: object) -> dict[str, tuple[str, str, str]]:
    return {c[0]: (c[1], c[2], c[3]) for c in result.conditions}  # type: ignore[attr-defined]


def test_service_phase_and_ready_condition() -> None:
    run = classify("cloud", "c", _status(WorkerPhaseName.RUNNING))
    run_edge = classify("edge", "e", _status(WorkerPhaseName.RUNNING))
    pending = classify("cloud", "c", None)
    result = service_status(run, run_edge, models_message="Model default/big found")
    assert (result.phase, result.active, result.failed) == ("Running", 2, 0)
    conds = _conditions(result)
    assert conds["Ready"][:2] == ("True", "Running")
    assert conds["CloudReady"][:2] == ("True", "WorkerRunning")
    assert conds["ModelsReady"] == ("True", "ModelsFound", "Model default/big found")

    result = service_status(pending, run_edge)
    assert result.phase == "Pending"
    assert _conditions(result)["Ready"] == (
        "False",
        "CloudNotReady",
        "cloud worker c: being created",
    )

    node = classify("edge", "e", None, node_known=lambda _: False, template_node="edge-9")
    assert _conditions(service_status(run, node))["Ready"][1] == "NodeNotFound"
    assert _conditions(service_status(run, classify("edge", "e", None)))["Ready"][1] == (
        "EdgeNotReady"
    )

    broken = classify("edge", "e", _status(WorkerPhaseName.FAILED, message="OOM"), gave_up=True)
    result = service_status(run, broken)
    assert (result.phase, result.active, result.failed) == ("Failed", 1, 1)
    assert _conditions(result)["Ready"] == ("False", "WorkerFailed", "edge worker e: OOM")


def test_invalid_and_missing_model_statuses() -> None:
    invalid = invalid_status("spec.edgeWorker.template: bad")
    assert invalid.phase == "Failed"
    assert _conditions(invalid)["Valid"] == (
        "False",
        "InvalidSpec",
        "spec.edgeWorker.template: bad",
    )
    assert invalid.active is None

    missing = models_status(
        [ModelProblem("edge", "ModelNotFound", "Model default/little (spec...) not found")]
    )
    assert missing.phase == "Pending"
    conds = _conditions(missing)
    assert conds["Ready"][:2] == ("False", "ModelNotFound")
    assert conds["ModelsReady"][2] == "Model default/little (spec...) not found"
    assert conds["EdgeReady"][0] == "Unknown"


def test_edge_metrics_gauges_follow_the_reports() -> None:
    registry = CollectorRegistry()
    metrics = EdgeMetrics(registry)
    key = ObjectKey("JointInferenceService", "default", "ji")

    def value(metric: str) -> float | None:
        return registry.get_sample_value(
            "sedna_joint_inference_edge_metric",
            {"namespace": "default", "service": "ji", "metric": metric},
        )

    metrics.observe(
        key,
        [
            {"key": "inferenceNumber", "value": "10"},
            {"key": "uploadCloudRatio", "value": "0.25"},
            {"key": "note", "value": "not a number"},
        ],
    )
    assert (value("inferenceNumber"), value("uploadCloudRatio"), value("note")) == (10, 0.25, None)

    def headline(name: str) -> float | None:
        return registry.get_sample_value(
            f"sedna_joint_inference_service_{name}", {"namespace": "default", "service": "ji"}
        )

    assert (headline("inferences"), headline("offload_ratio")) == (10, 0.25)
    assert headline("hard_examples") is None  # not reported
    metrics.observe(key, [{"key": "inferenceNumber", "value": "12"}])
    assert (value("inferenceNumber"), value("uploadCloudRatio")) == (12, None)
    assert (headline("inferences"), headline("offload_ratio")) == (12, None)
    metrics.forget(key)
    assert value("inferenceNumber") is None
    assert headline("inferences") is None
