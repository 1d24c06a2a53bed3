"""The federated-learning workers' environment, placement and port rules, and the status
helpers (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from sedna.resources.objects import ResourceObject
from sedna_gm.controllers.federatedlearning.status import (
    invalid_status,
    is_finished,
    resources_status,
)
from sedna_gm.controllers.federatedlearning.workers import (
    JobInputs,
    ResolvedDataset,
    aggregator_bulk_port,
    build_aggregator,
    build_trainer,
    dataset_names,
    explicit_agg_port,
)
from sedna_gm.controllers.jointinference.workers import ResolvedModel
from sedna_gm.workloads.builder import WorkerEnvSettings
from sedna_gm.workloads.port import RuntimeMode, ServiceEndpoint, WorkloadError

from .jointinference_support import env_of, template

CMD = ["python3", "-c", "print('x')"]
SETTINGS = WorkerEnvSettings(lc_server="http://lc:9100")
AGG_AT = ServiceEndpoint("10.0.0.1", 27001)
INPUTS = JobInputs(
    ResolvedModel("m", "/models/fl", None, ""),
    (ResolvedDataset("d1", "/data/d1.txt", "e1"), ResolvedDataset("d2", "/data/d2.txt", "e2")),
)


def job(*, agg_env: list[dict[str, Any]] | None = None, **spec: Any) -> ResourceObject:
    return ResourceObject(
        kind="FederatedLearningJob",
        name="fl",
        namespace="default",
        spec={
            "aggregationWorker": {
                "model": {"name": "m"},
                "template": template(CMD, node="cloud", env=agg_env),
            },
            "trainingWorkers": [
                {"dataset": {"name": "d1"}, "template": template(CMD)},
                {"dataset": {"name": "d2"}, "template": template(CMD)},
            ],
            **spec,
        },
    )


def test_aggregator_env_binds_its_port_and_counts_participants() -> None:
    built = build_aggregator(job(), INPUTS, mode=RuntimeMode.LOCAL, settings=SETTINGS, port=27001)
    env = env_of(built.spec)
    assert env["AGG_BIND_PORT"] == "27001"
    assert env["PARTICIPANTS_COUNT"] == "2"
    assert env["MODEL_NAME"] == "m"
    assert env["TRANSMITTER"] == "ws"
    # Local aggregators share a host: their bulk ports are picked free (and advertised).
    assert env["SEDNA_AGGREGATOR_BULK_PORT"] == "0"


def test_the_bulk_port_is_the_templates_or_the_default() -> None:
    built = build_aggregator(
        job(), INPUTS, mode=RuntimeMode.KUBERNETES, settings=SETTINGS, port=7363
    )
    assert "SEDNA_AGGREGATOR_BULK_PORT" not in env_of(built.spec)  # the server's default
    assert aggregator_bulk_port(job()) == 7365
    pinned = job(agg_env=[{"name": "SEDNA_AGGREGATOR_BULK_PORT", "value": "9000"}])
    assert aggregator_bulk_port(pinned) == 9000
    local = build_aggregator(pinned, INPUTS, mode=RuntimeMode.LOCAL, settings=SETTINGS, port=1)
    assert env_of(local.spec)["SEDNA_AGGREGATOR_BULK_PORT"] == "9000"
    off = job(agg_env=[{"name": "SEDNA_AGGREGATOR_BULK_PORT", "value": "none"}])
    assert aggregator_bulk_port(off) is None
    for bad in ("0", "x", "70000"):
        wrong = job(agg_env=[{"name": "SEDNA_AGGREGATOR_BULK_PORT", "value": bad}])
        with pytest.raises(WorkloadError, match=f"SEDNA_AGGREGATOR_BULK_PORT: '{bad}' is not"):
            aggregator_bulk_port(wrong)


def test_trainer_runs_on_its_datasets_node_and_points_at_the_aggregator() -> None:
    built = build_trainer(
        job(), 1, INPUTS, mode=RuntimeMode.LOCAL, settings=SETTINGS, aggregator=AGG_AT
    )
    env = env_of(built.spec)
    assert built.spec.node_name == "e2"
    assert (env["AGG_IP"], env["AGG_PORT"]) == ("10.0.0.1", "27001")
    assert env["DATASET_NAME"] == "d2"
    assert env["TRAIN_DATASET_URL"] == "/data/d2.txt"


def test_trainer_pinned_to_another_node_is_a_spec_error() -> None:
    obj = job()
    obj.spec["trainingWorkers"][0]["template"]["spec"]["nodeName"] = "elsewhere"
    with pytest.raises(WorkloadError, match=r"trainingWorkers\[0\].template.spec.nodeName"):
        build_trainer(obj, 0, INPUTS, mode=RuntimeMode.LOCAL, settings=SETTINGS, aggregator=AGG_AT)


def test_s3_transmitter_wins_and_names_its_path() -> None:
    obj = job(transmitter={"s3": {"aggDataPath": "s3://b/agg"}, "ws": {}})
    built = build_trainer(
        obj, 0, INPUTS, mode=RuntimeMode.LOCAL, settings=SETTINGS, aggregator=AGG_AT
    )
    env = env_of(built.spec)
    assert (env["TRANSMITTER"], env["AGG_DATA_PATH"]) == ("s3", "s3://b/agg")


def test_explicit_agg_port_is_read_and_checked() -> None:
    assert explicit_agg_port(job()) is None
    assert explicit_agg_port(job(agg_env=[{"name": "AGG_BIND_PORT", "value": "7000"}])) == 7000
    with pytest.raises(WorkloadError, match="AGG_BIND_PORT: 'x' is not a port number"):
        explicit_agg_port(job(agg_env=[{"name": "AGG_BIND_PORT", "value": "x"}]))
    assert list(dataset_names(job())) == ["d1", "d2"]


def test_status_rules() -> None:
    failed = invalid_status("spec.x: bad")
    assert (failed.phase, failed.finished) == ("Failed", True)
    assert ("Failed", "True", "InvalidSpec", "spec.x: bad") in failed.conditions
    pending = resources_status([("DatasetNotFound", "a"), ("SecretNotFound", "b")])
    assert pending.phase == "Pending"
    assert ("ResourcesReady", "False", "DatasetNotFound", "a; b") in pending.conditions
    done = {"conditions": [{"type": "Complete", "status": "True", "observedGeneration": 2}]}
    assert is_finished(done, 2)
    assert not is_finished(done, 3)  # a changed spec runs again
