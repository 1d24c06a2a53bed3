"""JobBase: config merge, names from the env, model_path, reports, post_process, hot update."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sedna.backend import BackendBase
from sedna.common.class_factory import ClassFactory, ClassType
from sedna.common.config import BaseConfig
from sedna.core.base import JobBase, ModelLoadingThread, resolve_post_process

pytestmark = pytest.mark.filterwarnings("ignore:SKLEARN Not Support yet:UserWarning")


class Estimator:
    def __init__(self) -> None:
        self.loaded: list[str] = []

    def load(self, model_url: str = "") -> None:
        self.loaded.append(Path(model_url).read_text())

    def predict(self, data: Any, scale: int = 1) -> Any:
        return [v * scale for v in data]

    def evaluate(self, data: Any, **kwargs: Any) -> dict[str, Any]:
        return {"n": len(data)}


def test_names_come_from_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    job = JobBase(Estimator)
    assert (job.job_name, job.worker_name, job.namespace) == ("sedna", "sedna", "sedna")
    monkeypatch.setenv("SERVICE_NAME", "helmet")  # what the controller sets for services
    job = JobBase(Estimator)
    assert (job.job_name, job.worker_name, job.namespace) == ("helmet", "helmet", "helmet")
    monkeypatch.setenv("JOB_NAME", "il-job")
    monkeypatch.setenv("WORKER_NAME", "il-job-train-abcde")
    monkeypatch.setenv("NAMESPACE", "ns")
    job = JobBase(Estimator)
    assert (job.job_name, job.worker_name, job.namespace) == ("il-job", "il-job-train-abcde", "ns")
    assert job.lc_server.startswith("http://127.0.0.1:")
    assert job.job_kind == "default"
    assert isinstance(job.estimator, BackendBase)


def test_config_dict_is_merged_into_base_config() -> None:
    job = JobBase(Estimator, config={"job_name": "from-config", "model_url": "/m/x.pkl"})
    assert job.job_name == "from-config"
    assert BaseConfig.model_url == "/m/x.pkl"
    assert job.model_path == "/m/x.pkl"


def test_model_path_rules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    model = tmp_path / "little.pkl"
    model.write_text("v1")
    monkeypatch.setenv("MODEL_URL", f"file://{model}")
    assert JobBase(Estimator).model_path == str(model)
    monkeypatch.setenv("MODEL_URL", str(tmp_path))  # a directory: + the estimator's name
    assert JobBase(Estimator).model_path == str(tmp_path / "model_finetune_.pkl")
    monkeypatch.setenv("MODEL_PATH", "/explicit/model.bin")
    assert JobBase(Estimator).model_path == "/explicit/model.bin"
    monkeypatch.delenv("MODEL_PATH")
    monkeypatch.setenv("MODEL_URL", "s3://bucket/models/little.onnx")
    assert JobBase(Estimator).model_path == "s3://bucket/models/little.onnx"
    monkeypatch.setenv("MODEL_URL", str(tmp_path))
    monkeypatch.setenv("MODEL_LOAD_MODE", "url")
    assert JobBase(Estimator).model_path == str(tmp_path)


def test_inference_evaluate_and_post_process() -> None:
    job = JobBase(Estimator)
    assert job.inference([1, 2], scale=3) == [3, 6]
    assert job.inference([1, 2], post_process=sum) == 3
    assert job.evaluate([1, 2, 3], post_process=lambda r: r["n"]) == 3
    with pytest.raises(NotImplementedError):
        job.train()
    assert job.get_parameters("NO_SUCH_PARAMETER", "dflt") == "dflt"


def test_post_process_by_registered_name() -> None:
    @ClassFactory.register(ClassType.CALLBACK, alias="test_core_double")
    def double(result: Any) -> Any:
        return [2 * v for v in result]

    assert resolve_post_process("test_core_double") is double
    assert JobBase(Estimator).inference([1], post_process="test_core_double") == [2]
    with pytest.raises(ValueError, match="test_core_missing"):
        resolve_post_process("test_core_missing")
    with pytest.raises(TypeError, match="callable or a registered callback name"):
        resolve_post_process(42)
    assert resolve_post_process(None) is None


def test_report_task_info_posts_the_upstream_message(
    lc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOB_NAME", "helmet-il")
    monkeypatch.setenv("WORKER_NAME", "helmet-il-train-x1")
    monkeypatch.setenv("NAMESPACE", "default")
    job = JobBase(Estimator)
    results = job.estimator.model_info("/home/data/m.pb", relpath="/home/data", result=0.9)
    answer = job.report_task_info({"currentRound": 1}, "completed", results, kind="train")
    assert answer == {"Status": 200, "Message": "OK"}
    [(path, body)] = lc.requests
    assert path == "/sedna/workers/helmet-il-train-x1/info"
    assert body == {
        "name": "helmet-il-train-x1",
        "namespace": "default",
        "ownerName": "helmet-il",
        "ownerKind": "default",
        "kind": "train",
        "status": "completed",
        "results": [{"format": "pb", "url": "/m.pb", "metrics": 0.9}],
        "ownerInfo": {"currentRound": 1},
    }
    job.report_task_info(None, "running")
    assert set(lc.requests[-1][1]) == {
        "name",
        "namespace",
        "ownerName",
        "ownerKind",
        "kind",
        "status",
    }


def test_report_to_an_unreachable_lc_returns_none() -> None:
    assert JobBase(Estimator).report_task_info(None, "failed") is None


def test_hot_update_loads_a_new_version_and_reports_deploy(
    lc: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    v1, v2 = tmp_path / "v1.txt", tmp_path / "v2.txt"
    v1.write_text("v1")
    v2.write_text("v2")
    conf = tmp_path / "hot.json"

    def announce(path: Path, version: str) -> None:
        conf.write_text(
            json.dumps({"model_config": {"model_path": str(path), "model_update_time": version}})
        )

    announce(v1, "1")
    monkeypatch.setenv("MODEL_HOT_UPDATE", "true")
    monkeypatch.setenv("MODEL_HOT_UPDATE_CONFIG", str(conf))
    monkeypatch.setenv("MODEL_POLL_PERIOD_SECONDS", "3600")
    job = JobBase(Estimator)
    try:
        loader = job.model_loader
        assert isinstance(loader, ModelLoadingThread)
        assert loader.is_alive()
        assert loader.check_time == 3600
        assert loader.poll_once()
        assert not loader.poll_once()  # same version: nothing to do
        announce(v2, "2")
        assert loader.poll_once()
        assert job.estimator.estimator.loaded == ["v1", "v2"]
        deploys = [body for _, body in lc.requests if body["kind"] == "deploy"]
        assert [d["status"] for d in deploys] == ["completed", "completed"]
        conf.write_text("not json")
        assert not loader.poll_once()
    finally:
        job.close()
    assert not job.model_loader.is_alive()


def test_hot_update_period_falls_back_to_60(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_HOT_UPDATE_CONFIG", "/nowhere.json")
    monkeypatch.setenv("MODEL_POLL_PERIOD_SECONDS", "0")
    backend = BackendBase(Estimator())
    assert ModelLoadingThread(backend).check_time == 60
    monkeypatch.delenv("MODEL_HOT_UPDATE_CONFIG")
    assert not ModelLoadingThread(backend).run_flag
