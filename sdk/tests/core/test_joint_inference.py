"""JointInference with an injected cloud: both mining modes, fallbacks, counters, reports."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from sedna.core.joint_inference.joint_inference import JointInference
from sedna.service.oip_client import CloudInferenceError, CloudUnavailableError, InferenceClient

pytestmark = pytest.mark.filterwarnings("ignore:SKLEARN Not Support yet:UserWarning")

EASY = [0.98, 0.01, 0.01]  # confident: CrossEntropy says "not hard"
HARD = [0.34, 0.33, 0.33]  # uniform: hard
HEM = {"method": "CrossEntropy", "param": {"threshold_cross_entropy": 0.5}}


class Estimator:
    """Upstream style: the "little model" echoes the class probabilities it is given."""

    def __init__(self) -> None:
        self.version = ""
        self.calls = 0

    def load(self, model_url: str = "") -> None:
        self.version = Path(model_url).read_text()

    def predict(self, data: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return np.asarray(data, dtype=np.float64) * kwargs.get("scale", 1)


class FakeCloud:
    """The cloud seam: answers ``answer(data)`` or raises ``error``."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[Any] = []
        self.closed = False

    def infer(self, data: Any) -> Any:
        self.calls.append(data)
        if self.error is not None:
            raise self.error
        return np.asarray([0.0, 0.0, 1.0], dtype=np.float32)  # the big model's answer

    def close(self) -> None:
        self.closed = True


def wait_until(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "little.txt"
    path.write_text("v1")
    monkeypatch.setenv("MODEL_URL", str(path))
    monkeypatch.setenv("SERVICE_NAME", "helmet")
    monkeypatch.setenv("WORKER_NAME", "helmet-edge-abcde")
    monkeypatch.setenv("NAMESPACE", "default")
    return path


@pytest.fixture
def make_ji(model: Path) -> Iterator[Callable[..., JointInference]]:
    made: list[JointInference] = []

    def make(cloud: Any = None, hem: Any = HEM, estimator: Any = Estimator) -> JointInference:
        ji = JointInference(
            estimator=estimator, hard_example_mining=hem, cloud=cloud or FakeCloud()
        )
        made.append(ji)
        return ji

    yield make
    for ji in made:
        ji.close()


def argmax(result: Any) -> int:
    return int(np.argmax(result))


def to_list(result: Any) -> list[float]:
    """A post_process keeping what the HEM rule judges: class probabilities."""
    return [round(float(v), 2) for v in np.asarray(result).reshape(-1)]


BIG = [0.0, 0.0, 1.0]  # FakeCloud's answer, after to_list


def test_construction_reads_the_env_and_loads_the_model(
    make_ji: Callable[..., JointInference],
) -> None:
    ji = make_ji()
    assert ji.estimator is not None
    assert ji.estimator.estimator.version == "v1"
    assert ji.job_kind == "jointinferenceservice"
    assert (ji.remote_ip, ji.port, ji.big_model_name) == ("127.0.0.1", 5000, "helmet")
    assert ji.cloud_timeout == 5.0
    assert ji.mining_mode == "inference-then-mining"
    assert ji.lc_reporter.is_alive()
    assert ji.lc_reporter.period_interval == 3600
    assert JointInference.get_hem_algorithm_from_config() == {}


def test_default_cloud_client_uses_the_big_model_env(
    model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIG_MODEL_IP", "10.0.0.7")
    monkeypatch.setenv("BIG_MODEL_PORT", "5123")
    monkeypatch.setenv("BIG_MODEL_NAME", "big")
    monkeypatch.setenv("CLOUD_INFERENCE_TIMEOUT", "0.25")
    ji = JointInference(estimator=Estimator, hard_example_mining=HEM)
    try:
        assert isinstance(ji.cloud, InferenceClient)
        assert ji.cloud.target == "10.0.0.7:5123"
        assert ji.cloud.model_name == "big"
        assert ji.cloud.timeout == 0.25
    finally:
        ji.close()


def test_inference_then_mining(make_ji: Callable[..., JointInference]) -> None:
    cloud = FakeCloud()
    ji = make_ji(cloud)
    edge_before = sample("sedna_joint_inference_inferences_total", {"answered_by": "edge"})
    cloud_before = sample("sedna_joint_inference_inferences_total", {"answered_by": "cloud"})
    hard_before = sample("sedna_joint_inference_hard_examples_total")

    is_hard, final, edge, cloud_result = ji.inference(EASY, post_process=to_list)
    assert (is_hard, final, cloud_result) == (False, EASY, None)
    assert isinstance(edge, np.ndarray)  # the raw edge result, before post_process
    assert edge.tolist() == EASY
    assert not cloud.calls

    is_hard, final, edge, cloud_result = ji.inference(HARD, post_process=to_list, scale=1)
    assert is_hard is True
    assert final == cloud_result == BIG  # post_process is applied to the cloud result too
    assert edge.tolist() == HARD
    assert np.asarray(cloud.calls[0]).tolist() == HARD  # the raw sample is offloaded

    reporter = ji.lc_reporter
    assert (reporter.inference_number, reporter.hard_example_number) == (2, 1)
    assert reporter.cloud_fallback_number == 0
    edge_now = sample("sedna_joint_inference_inferences_total", {"answered_by": "edge"})
    cloud_now = sample("sedna_joint_inference_inferences_total", {"answered_by": "cloud"})
    assert (edge_now - edge_before, cloud_now - cloud_before) == (1, 1)
    assert sample("sedna_joint_inference_hard_examples_total") - hard_before == 1


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (CloudUnavailableError("cloud down", grpc.StatusCode.UNAVAILABLE), "unavailable"),
        (CloudUnavailableError("too slow", grpc.StatusCode.DEADLINE_EXCEEDED), "unavailable"),
        (CloudInferenceError("bad input", grpc.StatusCode.INVALID_ARGUMENT), "error"),
        (RuntimeError("unexpected"), "error"),
    ],
)
def test_cloud_failure_falls_back_to_the_edge_and_is_counted(
    make_ji: Callable[..., JointInference],
    error: Exception,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ji = make_ji(FakeCloud(error))
    labels = {"reason": reason}
    before = sample("sedna_joint_inference_cloud_fallbacks_total", labels)
    with caplog.at_level(logging.DEBUG, logger="sedna.core.joint_inference.joint_inference"):
        for _ in range(3):
            is_hard, final, edge, cloud_result = ji.inference(HARD, post_process=to_list)
            assert (is_hard, final, cloud_result) == (True, to_list(HARD), None)
            assert edge.tolist() == HARD
    assert sample("sedna_joint_inference_cloud_fallbacks_total", labels) - before == 3
    assert ji.lc_reporter.cloud_fallback_number == 3
    assert ji.lc_reporter.hard_example_number == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # then DEBUG until the cloud answers again
    assert str(error) in warnings[0].getMessage()


def test_cloud_recovery_is_logged_and_warnings_resume(
    make_ji: Callable[..., JointInference], caplog: pytest.LogCaptureFixture
) -> None:
    cloud = FakeCloud(CloudUnavailableError("down", grpc.StatusCode.UNAVAILABLE))
    ji = make_ji(cloud)
    with caplog.at_level(logging.INFO, logger="sedna.core.joint_inference.joint_inference"):
        ji.inference(HARD)
        cloud.error = None
        assert ji.inference(HARD)[3] is not None
        cloud.error = CloudUnavailableError("down again", grpc.StatusCode.UNAVAILABLE)
        ji.inference(HARD)
    messages = [r.getMessage() for r in caplog.records]
    assert any("works again" in m for m in messages)
    assert sum("failed" in m for m in messages) == 2


def test_mining_then_inference(
    make_ji: Callable[..., JointInference], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINING_MODE", "mining-then-inference")
    cloud = FakeCloud()
    ji = make_ji(cloud)
    assert ji.mining_mode == "mining-then-inference"
    little = ji.estimator.estimator

    assert ji.inference(HARD, post_process=argmax) == [True, 2, None, 2]
    assert little.calls == 0  # the HEM judged the raw data: the edge model did not run

    is_hard, final, edge, cloud_result = ji.inference(EASY, post_process=argmax)
    assert (is_hard, final, cloud_result) == (False, 0, None)
    assert edge.tolist() == EASY
    assert little.calls == 1
    assert len(cloud.calls) == 1

    cloud.error = CloudUnavailableError("down", grpc.StatusCode.UNAVAILABLE)
    is_hard, final, edge, cloud_result = ji.inference(HARD, post_process=argmax)
    assert (is_hard, final, cloud_result) == (True, 0, None)  # the edge answered instead
    assert edge.tolist() == HARD
    reporter = ji.lc_reporter
    assert (reporter.inference_number, reporter.hard_example_number) == (3, 2)
    assert reporter.cloud_fallback_number == 1


def test_hem_from_the_env_and_no_hem(
    make_ji: Callable[..., JointInference], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEM_NAME", "CrossEntropy")
    monkeypatch.setenv(
        "HEM_PARAMETERS", json.dumps([{"key": "threshold_cross_entropy", "value": "0.9"}])
    )
    assert JointInference.get_hem_algorithm_from_config(threshold_cross_entropy=0.1) == {
        "method": "CrossEntropy",
        "param": {"threshold_cross_entropy": 0.1},
    }
    ji = make_ji(hem=None)
    assert ji.hard_example_mining_algorithm.threshold_cross_entropy == 0.9
    assert ji.inference([0.9, 0.05, 0.05])[0] is True  # hard at 0.9, not at 0.5
    monkeypatch.delenv("HEM_NAME")
    cloud = FakeCloud()
    ji = make_ji(cloud, hem={})
    assert ji.hard_example_mining_algorithm is None
    assert ji.inference(HARD)[0] is False  # no rule: nothing is hard
    assert not cloud.calls


def test_post_process_by_registered_name(make_ji: Callable[..., JointInference]) -> None:
    from sedna.common.class_factory import ClassFactory, ClassType

    ClassFactory.register_cls(to_list, ClassType.CALLBACK, alias="test_ji_to_list")
    assert ji_result(make_ji(), "test_ji_to_list") == [True, BIG]


def ji_result(ji: JointInference, post_process: str) -> list[Any]:
    is_hard, final, _, _ = ji.inference(HARD, post_process=post_process)
    return [is_hard, final]


@pytest.mark.parametrize(
    ("env", "value", "fragment"),
    [
        ("MINING_MODE", "sometimes", "MINING_MODE must be one of"),
        ("CLOUD_INFERENCE_TIMEOUT", "0", "CLOUD_INFERENCE_TIMEOUT must be"),
        ("CLOUD_INFERENCE_TIMEOUT", "soon", "CLOUD_INFERENCE_TIMEOUT must be"),
        ("BIG_MODEL_PORT", "http", "BIG_MODEL_PORT must be a port"),
        ("BIG_MODEL_PORT", "70000", "BIG_MODEL_PORT must be a port"),
        ("LC_PERIOD", "-1", "LC_PERIOD must be"),
    ],
)
def test_bad_env_is_rejected(
    model: Path, monkeypatch: pytest.MonkeyPatch, env: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ValueError, match=fragment):
        JointInference(estimator=Estimator, cloud=FakeCloud())


def test_missing_model_and_missing_estimator(
    model: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODEL_URL", str(tmp_path / "gone.txt"))
    with pytest.raises(FileExistsError, match=r"gone\.txt miss"):
        JointInference(estimator=Estimator, cloud=FakeCloud())
    with pytest.raises(ValueError, match="needs an estimator"):
        JointInference(estimator=None, cloud=FakeCloud())


def test_without_model_url_the_estimator_is_used_as_built(
    model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODEL_URL")
    ji = JointInference(estimator=Estimator, hard_example_mining=HEM, cloud=FakeCloud())
    try:
        assert ji.estimator.estimator.version == ""
        assert ji.inference(EASY)[0] is False
    finally:
        ji.close()


def test_report_message_shape(lc: Any, make_ji: Callable[..., JointInference]) -> None:
    cloud = FakeCloud()
    ji = make_ji(cloud)
    assert ji.lc_reporter.report() is None  # nothing to report yet
    ji.inference(EASY)
    ji.inference(HARD)
    cloud.error = CloudUnavailableError("down", grpc.StatusCode.UNAVAILABLE)
    ji.inference(HARD)
    sent = ji.lc_reporter.report()
    assert sent is not None
    [(path, body)] = lc.requests
    assert path == "/sedna/workers/helmet-edge-abcde/info"
    info = body.pop("ownerInfo")
    assert body == {
        "name": "helmet-edge-abcde",
        "namespace": "default",
        "ownerName": "helmet",
        "ownerKind": "jointinferenceservice",
        "kind": "inference",
        "results": [],
    }
    assert set(info) == {
        "startTime",
        "updateTime",
        "inferenceNumber",
        "hardExampleNumber",
        "uploadCloudRatio",
        "cloudFallbackNumber",
    }
    assert (info["inferenceNumber"], info["hardExampleNumber"]) == (3, 2)
    assert info["uploadCloudRatio"] == pytest.approx(2 / 3)
    assert info["cloudFallbackNumber"] == 1


def test_reporter_thread_sends_every_lc_period(
    lc: Any, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LC_PERIOD", "0.05")
    ji = JointInference(estimator=Estimator, hard_example_mining=HEM, cloud=FakeCloud())
    try:
        ji.inference(HARD)
        wait_until(lambda: bool(lc.requests), "a periodic report")
    finally:
        ji.close()
    assert not ji.lc_reporter.is_alive()
    assert ji.cloud.closed
    assert lc.requests[0][1]["ownerInfo"]["hardExampleNumber"] == 1


def test_onnx_backend_without_an_estimator(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model: Path
) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["probs"], axis=-1)],
        "softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 8
    path = tmp_path / "little.onnx"
    onnx.save(onnx_model, str(path))
    monkeypatch.setenv("BACKEND_TYPE", "ONNX")
    monkeypatch.setenv("MODEL_URL", str(path))
    cloud = FakeCloud()
    ji = JointInference(hard_example_mining=HEM, cloud=cloud)
    try:
        is_hard, final, edge, _ = ji.inference([8.0, 0.0, 0.0], post_process=to_list)
        assert (is_hard, final) == (False, [1.0, 0.0, 0.0])
        assert edge.shape == (3,)  # one sample: the batch dimension is added and removed
        assert ji.inference([1.0, 1.0, 1.0], post_process=to_list)[:2] == [True, BIG]
    finally:
        ji.close()
    monkeypatch.delenv("MODEL_URL")
    with pytest.raises(ValueError, match="needs MODEL_URL"):
        JointInference(hard_example_mining=HEM, cloud=cloud)
