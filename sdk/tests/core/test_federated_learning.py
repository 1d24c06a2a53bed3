"""FederatedLearning and AggregationClient against a real sedna-aggregator on loopback."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from sedna.core.federated_learning import FederatedLearning, proximal_term, sample_count_of
from sedna.service.aggregation_client import (
    AggregationClient,
    AggregatorUnavailableError,
    NotJoinedError,
    UpdateRejectedError,
    WrongRoundError,
)
from tests.core.conftest import FakeLC, free_port

app = pytest.importorskip("sedna_aggregator.app")
settings_mod = pytest.importorskip("sedna_aggregator.settings")
from sedna.runtime import ServiceServer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:SKLEARN Not Support yet:UserWarning")

Array = np.ndarray[Any, Any]
SHAPES = [(4, 3), (3,)]
SAMPLES = [10, 20, 30]


class Aggregator:
    """sedna-aggregator served from its own event loop in a thread."""

    def __init__(self, **fields: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        settings = settings_mod.AggregatorSettings(
            host="127.0.0.1", port=0, metrics_port=None, drain_seconds=0.1, **fields
        )
        self.server: Any = None

        async def start() -> None:
            self.server = ServiceServer(settings)
            app.setup(self.server, settings)
            await self.server.start()

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.port = int(self.server.address.rsplit(":", 1)[1])

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0.1), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def aggregator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Aggregator]]:
    started: list[Aggregator] = []

    def start(**fields: Any) -> Aggregator:
        started.append(Aggregator(**fields))
        monkeypatch.setenv("AGG_IP", "127.0.0.1")
        monkeypatch.setenv("AGG_PORT", str(started[-1].port))
        return started[-1]

    monkeypatch.setenv("NAMESPACE", "default")
    monkeypatch.setenv("JOB_NAME", "fl-job")
    monkeypatch.setenv("CONNECT_TIMEOUT", "10")
    monkeypatch.setenv("ROUND_WAIT_TIMEOUT", "20")
    monkeypatch.delenv("TRANSMITTER", raising=False)
    yield start
    for server in started:
        server.close()


# ------------------------------------------------------------------ numpy-style estimator


def local_step(weights: list[Array], target: list[Array]) -> list[Array]:
    """The deterministic local training: half-way towards the client's target."""
    return [(w + 0.5 * (t - w)).astype(np.float32) for w, t in zip(weights, target, strict=True)]


class NumpyEstimator:
    def __init__(self, target: list[Array]) -> None:
        rng = np.random.default_rng(0)  # the same initialisation on every client
        self.weights = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
        self.target = target
        self.trained = 0

    def get_weights(self) -> list[Array]:
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: list[Array]) -> None:
        self.weights = [np.asarray(w, np.float32) for w in weights]

    def train(self, train_data: Any, valid_data: Any = None, **kwargs: Any) -> dict[str, float]:
        self.weights = local_step(self.weights, self.target)
        self.trained += 1
        return {"loss": float(self.trained)}


def make_jobs(
    monkeypatch: pytest.MonkeyPatch, estimators: list[Any], **kwargs: Any
) -> list[FederatedLearning]:
    jobs = []
    for i, estimator in enumerate(estimators):
        monkeypatch.setenv("WORKER_NAME", f"trainworker-{i}")
        jobs.append(FederatedLearning(estimator=estimator, aggregation="FedAvg", **kwargs))
    return jobs


def run_all(jobs: list[FederatedLearning], data: list[Any], **kwargs: Any) -> list[Any]:
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(job.train, d, **kwargs) for job, d in zip(jobs, data, strict=True)]
        return [f.result(timeout=30) for f in futures]


def test_three_numpy_clients_match_reference_fedavg_and_report_each_round(
    aggregator: Callable[..., Aggregator], lc: FakeLC, monkeypatch: pytest.MonkeyPatch
) -> None:
    aggregator(exit_round=3, min_participants=3, round_timeout_seconds=20)
    rng = np.random.default_rng(1)
    targets = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in SAMPLES]
    estimators = [NumpyEstimator(t) for t in targets]
    jobs = make_jobs(monkeypatch, estimators)
    try:
        run_all(jobs, [list(range(n)) for n in SAMPLES])
    finally:
        for job in jobs:
            job.close()

    expected = NumpyEstimator(targets[0]).get_weights()
    for _round in range(3):
        updates = [local_step(expected, t) for t in targets]
        expected = [
            sum(
                np.float64(n) * u[i].astype(np.float64)
                for u, n in zip(updates, SAMPLES, strict=True)
            )
            / sum(SAMPLES)
            for i in range(len(SHAPES))
        ]
    for estimator in estimators:
        assert estimator.trained == 3
        for got, want in zip(estimator.weights, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    by_worker: dict[str, list[dict[str, Any]]] = {}
    for path, body in lc.requests:
        by_worker.setdefault(body["name"], []).append(body)
        assert path == f"/sedna/workers/{body['name']}/info"
    assert sorted(by_worker) == ["trainworker-0", "trainworker-1", "trainworker-2"]
    for i, name in enumerate(sorted(by_worker)):
        bodies = by_worker[name]
        assert [b["ownerInfo"]["currentRound"] for b in bodies] == [1, 2, 3]
        assert [b["status"] for b in bodies] == ["running", "running", "completed"]
        for body in bodies:
            assert body["kind"] == "train"
            assert body["ownerKind"] == "federatedlearningjob"
            assert body["ownerName"] == "fl-job"
            assert body["namespace"] == "default"
            assert body["ownerInfo"]["sampleCount"] == SAMPLES[i]
            assert set(body["ownerInfo"]) == {
                "currentRound",
                "sampleCount",
                "startTime",
                "updateTime",
            }


# ------------------------------------------------------------------ torch


def test_torch_modules_train_two_rounds_with_fedprox_and_loss_drops(
    aggregator: Callable[..., Aggregator], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    torch = pytest.importorskip("torch")
    aggregator(exit_round=2, min_participants=3, round_timeout_seconds=20, proximal_mu=0.01)
    monkeypatch.setenv("BACKEND_TYPE", "TORCH")
    monkeypatch.setenv("MODEL_URL", str(tmp_path / "model.pth"))
    true_w = np.array([[1.0, -2.0, 0.5, 3.0]], np.float32)
    rng = np.random.default_rng(2)
    data = []
    for n in (40, 60, 80):
        x = rng.standard_normal((n, 4)).astype(np.float32)
        data.append((x, (x @ true_w.T + 0.3).astype(np.float32)))
    modules = []
    for _ in data:
        torch.manual_seed(0)
        modules.append(torch.nn.Linear(4, 1))
    x_all = torch.as_tensor(np.concatenate([d[0] for d in data]))
    y_all = torch.as_tensor(np.concatenate([d[1] for d in data]))
    with torch.no_grad():
        before = float(torch.nn.functional.mse_loss(modules[0](x_all), y_all))
    jobs = make_jobs(monkeypatch, modules)
    try:
        results = run_all(jobs, data, epochs=5, batch_size=16, learning_rate=0.05)
    finally:
        for job in jobs:
            job.close()
    assert all(job.proximal_mu == pytest.approx(0.01) for job in jobs)
    assert all(job.current_round == 2 for job in jobs)
    with torch.no_grad():
        after = float(torch.nn.functional.mse_loss(modules[0](x_all), y_all))
        for module in modules[1:]:
            for a, b in zip(module.parameters(), modules[0].parameters(), strict=True):
                torch.testing.assert_close(a, b)  # every client holds the aggregate
    assert after < 0.5 * before, (before, after)
    assert all(r["loss"] < before for r in results)
    assert (tmp_path / "model.pth").is_file()


def test_proximal_term_matches_a_hand_computation() -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.bias.copy_(torch.tensor([0.5]))
    global_weights = [np.array([[0.0, 1.0]], np.float32), np.array([1.5], np.float32)]
    mu = 0.4
    term = proximal_term(model, global_weights, mu)
    # ||w - g||^2 = 1 + 1 + 1 = 3  ->  mu / 2 * 3
    assert float(term.detach()) == pytest.approx(0.6)
    term.backward()
    torch.testing.assert_close(model.weight.grad, torch.tensor([[0.4, 0.4]]))  # mu * (w - g)
    torch.testing.assert_close(model.bias.grad, torch.tensor([-0.4]))
    assert float(proximal_term(model, global_weights, 0.0)) == 0.0
    with pytest.raises(ValueError, match="arrays"):
        proximal_term(model, global_weights[:1], mu)
    with pytest.raises(ValueError, match="mu"):
        proximal_term(model, global_weights, -1.0)


# ------------------------------------------------------------------ client errors


def test_absent_server_is_a_clear_error_within_the_deadline() -> None:
    port = free_port()
    with AggregationClient("127.0.0.1", port, timeout=1.0) as client:
        started = time.monotonic()
        with pytest.raises(AggregatorUnavailableError, match=f"127.0.0.1:{port}") as info:
            client.join("default/fl-job", "w1", 10)
        assert time.monotonic() - started < 3.0
        assert "sedna-aggregator" in str(info.value)


def test_federated_learning_without_server_fails_within_connect_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGG_PORT", str(free_port()))
    monkeypatch.setenv("CONNECT_TIMEOUT", "1")
    job = FederatedLearning(estimator=NumpyEstimator([np.zeros(s) for s in SHAPES]))
    started = time.monotonic()
    with pytest.raises(AggregatorUnavailableError):
        job.train([1, 2, 3])
    assert time.monotonic() - started < 4.0
    job.close()


def test_wrong_round_not_joined_and_malformed_updates(
    aggregator: Callable[..., Aggregator],
) -> None:
    server = aggregator(exit_round=3, min_participants=1, round_timeout_seconds=20)
    weights = NumpyEstimator([]).get_weights()
    with AggregationClient("127.0.0.1", server.port, timeout=5.0) as client:
        with pytest.raises(NotJoinedError):
            client.push(1, weights, 10)
        joined = client.join("default/fl-job", "w1", 10)
        assert (joined.state, joined.current_round, joined.selected) == ("TRAINING", 1, True)
        # A round the session has not reached: waited for until the deadline, then refused.
        with pytest.raises(WrongRoundError) as early:
            client.push(2, weights, 10, timeout=0.5)
        assert (early.value.round, early.value.current_round) == (2, 1)
        assert "round 1" in str(early.value)
        bad = [w.copy() for w in weights]
        bad[1][0] = np.nan
        with pytest.raises(UpdateRejectedError, match="INVALID_ARGUMENT"):
            client.push(1, bad, 10)
        assert client.push(1, weights, 10, {"loss": 1.0}) == 1
        round_number, aggregate, done = client.pull(1, timeout=5.0)
        assert (round_number, done) == (1, False)
        np.testing.assert_allclose(aggregate[0], weights[0])
        # A stale round: refused at once with the session's round.
        started = time.monotonic()
        with pytest.raises(WrongRoundError) as stale:
            client.push(1, weights, 10, timeout=5.0)
        assert stale.value.current_round == 2
        assert time.monotonic() - started < 2.0
        status = client.status()
        assert status.current_round == 2
        assert [c.client_id for c in status.clients] == ["w1"]
        client.leave()


def test_sample_count_of() -> None:
    x, y = np.zeros((7, 2)), np.zeros(7)
    assert sample_count_of((x, y)) == 7
    assert sample_count_of([1, 2, 3]) == 3
    with pytest.raises(TypeError, match="sample_count"):
        sample_count_of(iter([1]))
