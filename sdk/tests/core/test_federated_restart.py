"""FederatedLearning rides out an aggregator restart (restored from its checkpoint).

A real ``sedna-aggregator`` served in-process on loopback is stopped between rounds and a new
one is started on the same port and checkpoint directory, as a restarted pod would be. The
trainers are threads running :meth:`FederatedLearning.train`; where each one is when the
server goes (training, or waiting for the round's aggregate after its push) is controlled
with events, not timing. The jobs must end exactly as a job without a restart: the weights
of reference FedAvg, every round trained once, every trainer in the last round.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.s3_server import S3Endpoint, moto_s3

from sedna.algorithms.transmitter import S3Transmitter
from sedna.common.config import BaseConfig
from sedna.core.federated_learning import FederatedLearning
from sedna.service.aggregation_client import AggregationClient, SessionStatus
from tests.core.test_federated_learning import SHAPES, NumpyEstimator, local_step

app = pytest.importorskip("sedna_aggregator.app")
settings_mod = pytest.importorskip("sedna_aggregator.settings")
from sedna.runtime import ServiceServer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:SKLEARN Not Support yet:UserWarning")

Array = np.ndarray[Any, Any]
SESSION = "default/fl-job"
SAMPLES = [10, 20, 30]
EXIT_ROUND = 4
RESTART_BEFORE = 3
"""The round during which the aggregator restarts (rounds 1 and 2 are checkpointed)."""
DATA_PATH = "s3://fl-data/jobs"
WAIT = 30.0
"""Seconds any step of a test may take (a deadline, not a timing)."""


class Aggregator:
    """sedna-aggregator served from its own event loop in a thread, on a chosen port."""

    def __init__(self, port: int, checkpoint_dir: Path, **fields: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        settings = settings_mod.AggregatorSettings(
            host="127.0.0.1",
            port=port,
            metrics_port=None,
            drain_seconds=0.1,
            checkpoint_dir=checkpoint_dir,
            **fields,
        )

        async def start() -> Any:
            server = ServiceServer(settings)
            self.servicer = app.setup(server, settings)
            await server.start()
            return server

        self.server: Any = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.port = int(self.server.address.rsplit(":", 1)[1])
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        asyncio.run_coroutine_threadsafe(self.server.stop(0.1), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class GatedEstimator(NumpyEstimator):
    """NumpyEstimator that, when told to, stops in the training of one round until released.

    ``arrived`` is released when it gets there, ``gate`` lets it go on.
    """

    def __init__(
        self,
        target: list[Array],
        gate_round: int | None,
        arrived: threading.Semaphore,
        gate: threading.Event,
    ) -> None:
        super().__init__(target)
        self.gate_round = gate_round
        self.arrived = arrived
        self.gate = gate
        self.rounds_seen: list[Array] = []

    def train(self, train_data: Any, valid_data: Any = None, **kwargs: Any) -> dict[str, float]:
        self.rounds_seen.append(self.weights[0].copy())  # the global weights it trains from
        result = super().train(train_data, valid_data, **kwargs)
        if self.trained == self.gate_round:
            self.arrived.release()
            assert self.gate.wait(WAIT), "the test never released the trainer"
        return result


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[S3Endpoint]:
    with moto_s3({"fl-data/ready": b""}, authenticated=True) as endpoint:
        yield endpoint


@pytest.fixture(params=["grpc", "s3"])
def transmitter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """How the weights travel: streamed (``grpc``) or as S3 objects (the aggregator's fields;
    the trainers' environment is set here)."""
    if request.param == "grpc":
        monkeypatch.delenv("TRANSMITTER", raising=False)
        return {}
    pytest.importorskip("minio")
    s3: S3Endpoint = request.getfixturevalue("s3_endpoint")
    env = {
        "TRANSMITTER": "s3",
        "AGG_DATA_PATH": DATA_PATH,
        "S3_ENDPOINT_URL": s3.url,
        "ACCESS_KEY_ID": s3.access_key,
        "SECRET_ACCESS_KEY": s3.secret_key,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    BaseConfig.reset()
    return {
        "agg_data_path": DATA_PATH,
        "s3_endpoint_url": s3.url,
        "s3_access_key_id": s3.access_key,
        "s3_secret_access_key": s3.secret_key,
    }


@pytest.fixture
def restartable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Callable[..., Aggregator]]:
    """``start(port)``: an aggregator on ``port`` (0: any) with the test's checkpoints."""
    started: list[Aggregator] = []

    def start(port: int = 0, checkpoints: str = "checkpoints", **fields: Any) -> Aggregator:
        settings: dict[str, Any] = {
            "exit_round": EXIT_ROUND,
            "min_participants": len(SAMPLES),
            "expected_clients": len(SAMPLES),
            "join_grace_seconds": 600,
            "round_timeout_seconds": 600,
        }
        server = Aggregator(port, tmp_path / checkpoints, **{**settings, **fields})
        started.append(server)
        monkeypatch.setenv("AGG_IP", "127.0.0.1")
        monkeypatch.setenv("AGG_PORT", str(server.port))
        return server

    monkeypatch.setenv("NAMESPACE", "default")
    monkeypatch.setenv("JOB_NAME", "fl-job")
    monkeypatch.setenv("CONNECT_TIMEOUT", str(WAIT))
    monkeypatch.setenv("ROUND_WAIT_TIMEOUT", str(WAIT))
    yield start
    for server in started:
        server.close()


def _status(port: int) -> SessionStatus:
    """The session's status, read by a client that does not join (it would count)."""
    with AggregationClient("127.0.0.1", port, timeout=5.0) as probe:
        probe.session_id, probe.client_id = SESSION, "probe"
        return probe.status()


def _wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = threading.Event()
    timer = threading.Timer(WAIT, deadline.set)
    timer.start()
    try:
        while not check():
            if deadline.wait(0.02):
                raise AssertionError(f"timed out after {WAIT}s waiting for {what}")
    finally:
        timer.cancel()


def _reference(targets: list[list[Array]], rounds: int) -> list[Array]:
    """Sample-weighted FedAvg of ``local_step`` over ``rounds`` rounds, in float64."""
    expected = NumpyEstimator(targets[0]).get_weights()
    for _round in range(rounds):
        updates = [local_step(expected, t) for t in targets]
        expected = [
            np.asarray(
                sum(
                    np.float64(n) * u[i].astype(np.float64)
                    for u, n in zip(updates, SAMPLES, strict=True)
                )
                / sum(SAMPLES)
            )
            for i in range(len(SHAPES))
        ]
    return expected


@pytest.mark.parametrize(
    "pushed_before_restart",
    [0, 1],
    ids=["all-training", "one-waiting-for-its-aggregate"],
)
def test_trainers_resume_the_round_after_the_aggregator_restarts_on_its_checkpoints(
    restartable: Callable[..., Aggregator],
    monkeypatch: pytest.MonkeyPatch,
    transmitter: dict[str, Any],
    pushed_before_restart: int,
) -> None:
    """The aggregator goes while round 3 is trained, or while one trainer, whose update the
    old server took, waits in its pull; the restored server knows neither the trainers nor
    that update. Everyone re-joins and round 3 is done again, with the same updates; by S3
    the header-only pushes naming the update objects are sent again likewise."""
    first = restartable(0, **transmitter)
    rng = np.random.default_rng(1)
    targets = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in SAMPLES]
    arrived = threading.Semaphore(0)
    gate = threading.Event()
    estimators = [
        GatedEstimator(t, None if i < pushed_before_restart else RESTART_BEFORE, arrived, gate)
        for i, t in enumerate(targets)
    ]
    jobs = []
    for i, estimator in enumerate(estimators):
        monkeypatch.setenv("WORKER_NAME", f"trainworker-{i}")
        jobs.append(FederatedLearning(estimator=estimator, aggregation="FedAvg"))
    pool = ThreadPoolExecutor(len(jobs))
    try:
        futures = [
            pool.submit(job.train, list(range(n))) for job, n in zip(jobs, SAMPLES, strict=True)
        ]
        for _ in range(len(jobs) - pushed_before_restart):
            assert arrived.acquire(timeout=WAIT), "a trainer did not reach round 3"
        waiting = [f"trainworker-{i}" for i in range(pushed_before_restart)]

        def pushed() -> bool:
            status = _status(first.port)
            last = {c.client_id: c.last_round for c in status.clients}
            return all(last.get(cid) == RESTART_BEFORE for cid in waiting)

        _wait_for(pushed, f"{waiting} pushing round {RESTART_BEFORE}")
        before = _status(first.port)
        assert (before.state, before.current_round) == ("TRAINING", RESTART_BEFORE)

        first.close()
        restartable(first.port, **transmitter)
        gate.set()
        results = [f.result(timeout=2 * WAIT) for f in futures]
    finally:
        gate.set()
        pool.shutdown(wait=True)
        for job in jobs:
            job.close()

    assert [r["loss"] for r in results] == [float(EXIT_ROUND)] * len(jobs)
    expected = _reference(targets, EXIT_ROUND)
    for estimator in estimators:
        assert estimator.trained == EXIT_ROUND  # no round trained twice
        for got, want in zip(estimator.weights, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Round 3 started from round 2's aggregate on every trainer (the checkpointed weights).
    round_2 = _reference(targets, 2)[0]
    for estimator in estimators:
        np.testing.assert_allclose(estimator.rounds_seen[2], round_2, rtol=1e-5, atol=1e-6)
    final = _status(first.port)
    assert (final.state, final.current_round) == ("COMPLETED", EXIT_ROUND)
    if transmitter:
        assert all(isinstance(job.client.transmitter, S3Transmitter) for job in jobs)


def test_a_restart_without_its_checkpoints_trains_the_job_again_from_round_1(
    restartable: Callable[..., Aggregator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The restarted aggregator has no checkpoint (another directory): its session is new,
    at round 1. The trainers, in round 3, re-join, see the session at an earlier round than
    theirs and train from there instead of failing or waiting for a round that never comes."""
    monkeypatch.delenv("TRANSMITTER", raising=False)
    first = restartable(0)
    arrived = threading.Semaphore(0)
    gate = threading.Event()
    rng = np.random.default_rng(3)
    estimators = [
        GatedEstimator(
            [rng.standard_normal(s).astype(np.float32) for s in SHAPES],
            RESTART_BEFORE,
            arrived,
            gate,
        )
        for _ in SAMPLES
    ]
    jobs = []
    for i, estimator in enumerate(estimators):
        monkeypatch.setenv("WORKER_NAME", f"trainworker-{i}")
        jobs.append(FederatedLearning(estimator=estimator, aggregation="FedAvg"))
    pool = ThreadPoolExecutor(len(jobs))
    try:
        futures = [
            pool.submit(job.train, list(range(n))) for job, n in zip(jobs, SAMPLES, strict=True)
        ]
        for _ in jobs:
            assert arrived.acquire(timeout=WAIT), "a trainer did not reach round 3"
        first.close()
        restartable(first.port, checkpoints="elsewhere")
        gate.set()
        for future in futures:
            future.result(timeout=2 * WAIT)
    finally:
        gate.set()
        pool.shutdown(wait=True)
        for job in jobs:
            job.close()
    for estimator in estimators:
        # Rounds 1-3 on the first server, then rounds 1-4 of the new session.
        assert estimator.trained == RESTART_BEFORE + EXIT_ROUND
        for got, want in zip(estimator.weights, estimators[0].weights, strict=True):
            np.testing.assert_array_equal(got, want)  # all hold the last aggregate
    final = _status(first.port)
    assert (final.state, final.current_round) == ("COMPLETED", EXIT_ROUND)


def test_a_push_answered_duplicate_is_success_once_the_server_counted_it(
    restartable: Callable[..., Aggregator],
    monkeypatch: pytest.MonkeyPatch,
    transmitter: dict[str, Any],
) -> None:
    """Pushing the same round again (as after a push whose answer was lost) is refused as a
    duplicate; the trainer asks the server's status, sees its update counted, and goes on."""
    server = restartable(0, min_participants=2, expected_clients=None, **transmitter)
    monkeypatch.setenv("WORKER_NAME", "trainworker-0")
    estimator = NumpyEstimator([np.zeros(s) for s in SHAPES])
    job = FederatedLearning(estimator=estimator)
    other = AggregationClient("127.0.0.1", server.port, timeout=WAIT)
    try:
        job.register(timeout=WAIT)
        other.join(SESSION, "trainworker-1", 10)  # two joined: round 1 opens, stays open
        weights = estimator.get_weights()
        assert job._push(1, weights, 10, {"loss": 1.0}, WAIT) == 1
        assert job._push(1, weights, 10, {"loss": 1.0}, WAIT) == 1
        status = _status(server.port)
        last = {c.client_id: c.last_round for c in status.clients}
        assert last == {"trainworker-0": 1, "trainworker-1": 0}
        assert (status.state, status.current_round) == ("TRAINING", 1)
    finally:
        other.close()
        job.close()


class CuttingProxy:
    """A TCP proxy to the aggregator that cuts its first connection (both ways) once
    ``cut_after`` bytes went to the server: a push broken mid-stream, as by a crash or a
    network fault. Later connections are forwarded whole."""

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cut = threading.Event()
        self._first = True
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, upstream]
            limit = self.cut_after if self._first else None
            self._first = False
            threading.Thread(target=self._pump, args=(client, upstream, limit), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                sent += len(data)
                if limit is not None and sent > limit:
                    self.cut.set()
                    break
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


class BigEstimator:
    """One 1 MiB layer; each round's training adds 1 (so the aggregate counts the rounds)."""

    def __init__(self) -> None:
        self.weights = [np.zeros((512, 512), np.float32)]
        self.trained = 0

    def get_weights(self) -> list[Array]:
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: list[Array]) -> None:
        self.weights = [np.asarray(w, np.float32) for w in weights]

    def train(self, train_data: Any, valid_data: Any = None, **kwargs: Any) -> dict[str, float]:
        self.weights = [w + 1.0 for w in self.weights]
        self.trained += 1
        return {"loss": float(self.trained)}


@pytest.mark.parametrize("transport", ["grpc", "bulk"])
def test_a_push_cut_mid_stream_is_pushed_again_and_counts_once(
    restartable: Callable[..., Aggregator], monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    """The connection breaks while the update streams (UNAVAILABLE after frames went out:
    the client does not resend on its own); the trainer re-joins through a new connection
    and pushes again. Whether the server had counted it (a duplicate, confirmed by its
    status) or backed it out (taken anew), the job ends as without the fault. ``grpc``: the
    server has no bulk port and the proxy cuts the gRPC connection; ``bulk``: the proxy sits
    in front of the bulk port (the server advertises the proxy's)."""
    monkeypatch.delenv("TRANSMITTER", raising=False)
    fields: dict[str, Any] = {"bulk_port": None} if transport == "grpc" else {"bulk_port": 0}
    server = restartable(0, exit_round=2, min_participants=1, expected_clients=None, **fields)
    if transport == "grpc":
        proxy = CuttingProxy(server.port, cut_after=256 << 10)
        monkeypatch.setenv("AGG_PORT", str(proxy.port))
    else:
        proxy = CuttingProxy(server.servicer.bulk_port, cut_after=256 << 10)
        server.servicer.bulk_port = proxy.port
    monkeypatch.setenv("WORKER_NAME", "trainworker-0")
    estimator = BigEstimator()
    job = FederatedLearning(estimator=estimator)
    try:
        result = job.train([1, 2, 3])
    finally:
        job.close()
        proxy.close()
    assert proxy.cut.is_set(), "the proxy never cut the push"
    assert result == {"loss": 2.0}
    assert estimator.trained == 2  # the cut round was pushed again, not trained again
    np.testing.assert_array_equal(estimator.weights[0], np.full((512, 512), 2.0, np.float32))
    final = _status(server.port)
    assert (final.state, final.current_round) == ("COMPLETED", 2)
