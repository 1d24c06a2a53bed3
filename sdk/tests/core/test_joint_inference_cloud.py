"""JointInference against real OIP gRPC endpoints with the real InferenceClient.

The big model is a scikit-learn LogisticRegression trained on digits; the little one a
weaker one (trained on few samples). Cloud failures: a closed port, a server that never
answers (the CLOUD_INFERENCE_TIMEOUT deadline ends the call) and an error status.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY
from sklearn.linear_model import LogisticRegression

from sedna.core.joint_inference.joint_inference import JointInference
from sedna.service.oip_client import InferenceClient

pytestmark = pytest.mark.filterwarnings("ignore:SKLEARN Not Support yet:UserWarning")

HEM = {"method": "CrossEntropy", "param": {"threshold_cross_entropy": 0.7}}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fallbacks(reason: str) -> float:
    labels = {"reason": reason}
    return REGISTRY.get_sample_value("sedna_joint_inference_cloud_fallbacks_total", labels) or 0.0


class Little:
    """Upstream-style estimator: a LogisticRegression whose weights load from .npz."""

    def __init__(self) -> None:
        self.model = LogisticRegression(max_iter=300)

    def load(self, model_url: str = "") -> None:
        with np.load(model_url, allow_pickle=False) as data:
            self.model.coef_ = data["coef"]
            self.model.intercept_ = data["intercept"]
            self.model.classes_ = data["classes"]

    def predict(self, data: Any, **kwargs: Any) -> Any:
        x = np.asarray(data, dtype=np.float32).reshape(-1, 64)
        return self.model.predict_proba(x)[0]


@pytest.fixture(scope="module")
def models(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = (data.data / 16.0).astype(np.float32), data.target
    little = LogisticRegression(max_iter=300).fit(x[:60], y[:60])
    path = tmp_path_factory.mktemp("models") / "little.npz"
    np.savez(path, coef=little.coef_, intercept=little.intercept_, classes=little.classes_)
    big = LogisticRegression(max_iter=300).fit(x[:1500], y[:1500])

    def big_model(batch: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return big.predict_proba(batch)  # type: ignore[no-any-return]

    return path, big_model


@pytest.fixture
def edge_env(
    monkeypatch: pytest.MonkeyPatch, models: tuple[Path, Any]
) -> Iterator[Callable[..., JointInference]]:
    path, _ = models
    monkeypatch.setenv("MODEL_URL", str(path))
    monkeypatch.setenv("SERVICE_NAME", "digits")
    monkeypatch.setenv("CLOUD_INFERENCE_TIMEOUT", "0.5")
    made: list[JointInference] = []

    def make(port: int) -> JointInference:
        monkeypatch.setenv("BIG_MODEL_PORT", str(port))
        ji = JointInference(estimator=Little, hard_example_mining=HEM)
        made.append(ji)
        return ji

    yield make
    for ji in made:
        ji.close()


def argmax(result: Any) -> int:
    return int(np.argmax(result))


def first_hard(ji: JointInference, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    for row in x:
        if ji.hard_example_mining_algorithm(ji.estimator.predict(row)):
            return row  # type: ignore[no-any-return]
    pytest.fail("the little model finds no hard example")


def test_hard_examples_are_answered_by_the_big_model(
    edge_env: Callable[..., JointInference],
    cloud_server: Callable[..., Any],
    models: tuple[Path, Any],
    digits: tuple[Any, Any],
) -> None:
    _, big_model = models
    server = cloud_server(big_model, features=64)
    ji = edge_env(server.port)
    assert isinstance(ji.cloud, InferenceClient)
    x, y = digits
    hard = first_hard(ji, x)
    is_hard, final, edge, cloud = ji.inference(hard)
    assert is_hard is True
    assert cloud is not None
    assert np.allclose(final, big_model(hard[np.newaxis, :])[0], atol=1e-6)
    assert np.allclose(edge, ji.estimator.predict(hard))

    # Joint accuracy beats the little model alone on the test slice.
    test_x, test_y = x[1500:], y[1500:]
    edge_hits = joint_hits = offloaded = 0
    for row, label in zip(test_x, test_y, strict=True):
        is_hard, final, edge, _ = ji.inference(row)
        edge_hits += argmax(edge) == label
        joint_hits += argmax(final) == label
        offloaded += is_hard
    assert joint_hits > edge_hits
    assert 0 < offloaded < len(test_x)
    assert server.calls == offloaded + 1


def test_closed_port_falls_back_to_the_edge(
    edge_env: Callable[..., JointInference], digits: tuple[Any, Any]
) -> None:
    ji = edge_env(free_port())
    hard = first_hard(ji, digits[0])
    before = fallbacks("unavailable")
    is_hard, final, edge, cloud = ji.inference(hard)
    assert is_hard is True
    assert cloud is None
    assert np.array_equal(final, edge)
    assert fallbacks("unavailable") - before == 1
    assert ji.lc_reporter.cloud_fallback_number == 1


def test_a_cloud_that_never_answers_is_cut_by_the_deadline(
    edge_env: Callable[..., JointInference],
    cloud_server: Callable[..., Any],
    models: tuple[Path, Any],
    digits: tuple[Any, Any],
) -> None:
    server = cloud_server(models[1], features=64)
    server.mode = "stall"
    ji = edge_env(server.port)
    hard = first_hard(ji, digits[0])
    before = fallbacks("unavailable")
    is_hard, final, edge, cloud = ji.inference(hard)  # returns: DEADLINE_EXCEEDED
    assert (is_hard, cloud) == (True, None)
    assert np.array_equal(final, edge)
    assert fallbacks("unavailable") - before == 1
    assert server.calls == 1


def test_an_error_status_falls_back_and_is_counted_as_error(
    edge_env: Callable[..., JointInference],
    cloud_server: Callable[..., Any],
    models: tuple[Path, Any],
    digits: tuple[Any, Any],
) -> None:
    server = cloud_server(models[1], features=64)
    server.mode = "error"
    ji = edge_env(server.port)
    hard = first_hard(ji, digits[0])
    before = fallbacks("error")
    is_hard, final, edge, cloud = ji.inference(hard)
    assert (is_hard, cloud) == (True, None)
    assert np.array_equal(final, edge)
    assert fallbacks("error") - before == 1
