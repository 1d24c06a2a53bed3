"""MistNet end to end in one process: AggregationServerV2 and two FederatedLearningV2 edges
over gRPC on loopback, on a small slice of scikit-learn's digits."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
datasets = pytest.importorskip("sklearn.datasets")

from torch import nn  # noqa: E402

from sedna.algorithms.aggregation import MistNet  # noqa: E402
from sedna.algorithms.client_choose import SimpleClientChoose  # noqa: E402
from sedna.core.federated_learning import FederatedLearningV2  # noqa: E402
from sedna.service.aggregation_client import SessionConfigConflictError  # noqa: E402
from sedna.service.server import AggregationServerV2  # noqa: E402
from sedna.service.split_learning import SplitLearningClient  # noqa: E402

SESSION = "default/mistnet-test"


def build_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.BatchNorm1d(8 * 16),
        nn.Linear(8 * 16, 10),
    )


def digits() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    data = datasets.load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    return x, data.target.astype(np.int64)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAMESPACE", "default")
    monkeypatch.setenv("JOB_NAME", "mistnet-test")
    monkeypatch.setenv("CONNECT_TIMEOUT", "60")
    monkeypatch.setenv("ROUND_WAIT_TIMEOUT", "90")
    monkeypatch.delenv("LC_SERVER", raising=False)
    monkeypatch.delenv("TRANSMITTER", raising=False)
    monkeypatch.delenv("MODEL_URL", raising=False)


def start_server(**kwargs: Any) -> tuple[AggregationServerV2, threading.Thread]:
    server = AggregationServerV2(host="127.0.0.1", port=0, session_id=SESSION, **kwargs)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.start()
        except BaseException as err:  # surfaced by the test
            errors.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert server.wait_serving(60), f"the server did not start: {errors}"
    return server, thread


def edge(name: str, port: int, data: Any, epsilon: float, monkeypatch: Any) -> FederatedLearningV2:
    monkeypatch.setenv("AGG_IP", "127.0.0.1")
    monkeypatch.setenv("AGG_PORT", str(port))
    monkeypatch.setenv("WORKER_NAME", name)
    return FederatedLearningV2(
        data=data,
        estimator=build_model(),
        aggregation=MistNet(cut_layer=3, epsilon=epsilon),
        clip_bound=16.0,
        rng=np.random.default_rng(hash(name) % 1000),
    )


@pytest.mark.usefixtures("env")
def test_two_edges_train_the_cloud_part_and_get_the_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x, y = digits()
    x_test, y_test = x[1200:1500], y[1200:1500]
    server, thread = start_server(
        data=(x_test, y_test),
        estimator=build_model(),
        aggregation=MistNet(cut_layer=3, epsilon=1000),
        chooser=SimpleClientChoose(per_round=2),
        exit_round=2,
        epochs=8,
        learning_rate=0.01,
    )
    edges = [
        edge("edge-1", server.port, (x[:300], y[:300]), 1000, monkeypatch),
        edge("edge-2", server.port, (x[300:600], y[300:600]), 1000, monkeypatch),
    ]
    try:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda job: job.train(), edges))
    finally:
        for job in edges:
            job.close()
    thread.join(60)
    assert not thread.is_alive(), "the server did not stop after the edges left"
    assert [r["round"] for r in results] == [2, 2]
    assert server.session is not None
    latest = server.session.latest
    assert latest.exit
    assert latest.participants == ("edge-1", "edge-2")
    assert latest.total_samples == 600
    # Chance is 0.1 on ten classes.
    assert latest.metrics["eval_accuracy"] > 0.6, latest.metrics
    # The edges hold the cloud-trained model, front and back.
    for job in edges:
        for ours, theirs in zip(
            job.model.state_dict().values(), server.model.state_dict().values(), strict=True
        ):
            torch.testing.assert_close(ours, theirs)


@pytest.mark.usefixtures("env")
def test_an_edge_with_another_cut_layer_is_refused_at_join(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, thread = start_server(
        estimator=build_model(), aggregation=MistNet(cut_layer=3, epsilon=10), exit_round=1
    )
    try:
        monkeypatch.setenv("AGG_IP", "127.0.0.1")
        monkeypatch.setenv("AGG_PORT", str(server.port))
        job = FederatedLearningV2(
            data=digits(), estimator=build_model(), aggregation=MistNet(cut_layer=2, epsilon=10)
        )
        with pytest.raises(SessionConfigConflictError, match="cut_layer=3"):
            job.train()
        job.close()
        with SplitLearningClient("127.0.0.1", server.port, timeout=30) as client:
            client.join(SESSION, "probe", sample_count=2)
            with pytest.raises(ValueError, match="same number of rows"):
                client.upload(1, np.ones((2, 8, 4, 4)), np.zeros(3), cut_layer=3, epsilon=10)
            client.leave()
    finally:
        server.stop(0.1)
        thread.join(30)


def test_unsupported_aggregation_and_model_are_refused() -> None:
    from sedna.algorithms.aggregation import FedAvg

    with pytest.raises(NotImplementedError, match="FedAvg averages weights"):
        AggregationServerV2(estimator=build_model(), aggregation=FedAvg())
    with pytest.raises(NotImplementedError, match="FedAvgV2 averages weights"):
        AggregationServerV2(estimator=build_model(), aggregation="FedAvgV2")
    with pytest.raises(TypeError, match=r"nn\.Sequential"):
        AggregationServerV2(estimator=nn.Linear(2, 2), aggregation=MistNet(cut_layer=1))
    with pytest.raises(ValueError, match="cut_layer=6 must be between 0 and 5"):
        AggregationServerV2(estimator=build_model(), aggregation=MistNet(cut_layer=6))
