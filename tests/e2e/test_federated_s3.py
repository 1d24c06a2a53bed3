"""Federated learning with ``TRANSMITTER=s3``: weights through S3 objects, end to end.

The real ``sedna-aggregator`` runs as a process with the environment the controller gives an
s3 job's aggregation worker (``AGG_DATA_PATH``, ``S3_ENDPOINT_URL``, ``ACCESS_KEY_ID``,
``SECRET_ACCESS_KEY``); S3 is moto's server on loopback with request authentication on.
Three unmodified ``FederatedLearning`` trainers (threads of this process, the same worker
environment plus ``TRANSMITTER=s3``) run two rounds: every update goes through an object,
only its URI through gRPC. Checked: each round's aggregate object is the sample-weighted
FedAvg of the update objects the trainers wrote, the trainers end with it, the LC got their
reports; then corrupt update objects (garbage header, NaN, an object outside
``AGG_DATA_PATH``) are refused with the problem named, and do not touch the round.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from support.s3_server import S3Endpoint, moto_s3

from sedna.algorithms.transmitter import S3Transmitter
from sedna.cli.stack import wait_healthy
from sedna.core.federated_learning import FederatedLearning
from sedna.service.aggregation_client import AggregationClient, UpdateRejectedError

pytest.importorskip("minio")
pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings("ignore:SKLEARN Not Support yet:UserWarning"),
]

Array = np.ndarray[Any, Any]
DATA_PATH = "s3://fl-data/jobs"
SESSION = "default/fl-s3"
SHAPES = [(6, 4), (4,), (3, 3, 2)]
SAMPLES = [10, 30, 60]
ROUNDS = 2


class _LC(BaseHTTPRequestHandler):
    reports: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).reports.append(json.loads(body))
        answer = b'{"Status": 200, "Message": "OK"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def lc() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A LocalController stand-in that records the workers' reports."""
    handler = type("RecordingLC", (_LC,), {"reports": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.reports
    server.shutdown()
    server.server_close()


@pytest.fixture
def s3() -> Iterator[S3Endpoint]:
    with moto_s3({"fl-data/ready": b"", "elsewhere/ready": b""}, authenticated=True) as endpoint:
        yield endpoint


def _s3_env(s3: S3Endpoint) -> dict[str, str]:
    """The controller's variables for ``spec.transmitter.s3`` with a credentialName."""
    return {
        "TRANSMITTER": "s3",
        "AGG_DATA_PATH": DATA_PATH,
        "S3_ENDPOINT_URL": s3.url,
        "ACCESS_KEY_ID": s3.access_key,
        "SECRET_ACCESS_KEY": s3.secret_key,
    }


@pytest.fixture
def aggregator(
    s3: S3Endpoint, e2e_tools: SimpleNamespace, tmp_path: Path
) -> Iterator[tuple[int, Path]]:
    """``sedna-aggregator`` as a process with an s3 job's environment; (port, log file)."""
    port = e2e_tools.free_port()
    log = tmp_path / "aggregator.log"
    argv = [
        e2e_tools.script("sedna-aggregator"),
        "--port",
        str(port),
        "--metrics-port",
        "none",
        "--drain-seconds",
        "1",
        "--log-format",
        "console",
        "--round-timeout-seconds",
        "60",
    ]
    env = {**e2e_tools.clean_env(), **_s3_env(s3)}
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_healthy(f"127.0.0.1:{port}", time.monotonic() + 60, lambda: process.poll() is None)
        yield port, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


class NumpyEstimator:
    """Local training: half-way from the current weights towards the trainer's own target."""

    def __init__(self, target: list[Array]) -> None:
        rng = np.random.default_rng(0)  # the same initialisation on every trainer
        self.weights = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
        self.target = target

    def get_weights(self) -> list[Array]:
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: list[Array]) -> None:
        self.weights = [np.asarray(w, np.float32) for w in weights]

    def train(self, train_data: Any, valid_data: Any = None, **kwargs: Any) -> dict[str, float]:
        self.weights = [
            (w + 0.5 * (t - w)).astype(np.float32)
            for w, t in zip(self.weights, self.target, strict=True)
        ]
        return {
            "loss": float(
                np.mean(
                    [np.mean((w - t) ** 2) for w, t in zip(self.weights, self.target, strict=True)]
                )
            )
        }


def test_three_trainers_two_rounds_through_s3_objects(
    s3: S3Endpoint,
    aggregator: tuple[int, Path],
    lc: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, log = aggregator
    lc_url, reports = lc
    for name, value in {
        **_s3_env(s3),
        "AGG_IP": "127.0.0.1",
        "AGG_PORT": str(port),
        "NAMESPACE": "default",
        "JOB_NAME": "fl-s3",
        "LC_SERVER": lc_url,
        "CONNECT_TIMEOUT": "30",
        "ROUND_WAIT_TIMEOUT": "60",
        "BACKEND_TYPE": "SKLEARN",  # a plain numpy estimator: no framework import
    }.items():
        monkeypatch.setenv(name, value)
    rng = np.random.default_rng(7)
    targets = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in SAMPLES]
    estimators = [NumpyEstimator(t) for t in targets]
    jobs = []
    for i, estimator in enumerate(estimators):
        monkeypatch.setenv("WORKER_NAME", f"trainer-{i}")
        jobs.append(
            FederatedLearning(
                estimator=estimator,
                aggregation="FedAvg",
                session_config={"exit_round": ROUNDS, "min_participants": len(SAMPLES)},
            )
        )
    assert all(isinstance(job.client.transmitter, S3Transmitter) for job in jobs)
    try:
        with ThreadPoolExecutor(len(jobs)) as pool:
            futures = [
                pool.submit(job.train, list(range(n)), sample_count=n)
                for job, n in zip(jobs, SAMPLES, strict=True)
            ]
            for future in futures:
                future.result(timeout=120)
    finally:
        for job in jobs:
            job.close()

    reader = S3Transmitter(s3.url, s3.access_key, s3.secret_key, DATA_PATH)
    for round_number in range(1, ROUNDS + 1):
        updates = [
            [a for _, a in reader.recv(reader.update_uri(SESSION, round_number, f"trainer-{i}"))]
            for i in range(len(SAMPLES))
        ]
        expected = [
            sum(np.float64(n) * u[layer] for u, n in zip(updates, SAMPLES, strict=True))
            / sum(SAMPLES)
            for layer in range(len(SHAPES))
        ]
        aggregate = reader.recv(
            reader.object_uri(SESSION, "global", f"round-{round_number:06d}.safetensors")
        )
        assert [name for name, _ in aggregate] == [f"layer.{i}" for i in range(len(SHAPES))]
        for (_, got), want in zip(aggregate, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        if round_number == ROUNDS:
            for estimator in estimators:
                for got, (_, want) in zip(estimator.weights, aggregate, strict=True):
                    np.testing.assert_array_equal(got, want)
    # Round 2's updates started from round 1's aggregate (not from each trainer's own weights).
    first = [
        a for _, a in reader.recv(reader.object_uri(SESSION, "global", "round-000001.safetensors"))
    ]
    for i, target in enumerate(targets):
        second = [a for _, a in reader.recv(reader.update_uri(SESSION, 2, f"trainer-{i}"))]
        for got, start, t in zip(second, first, target, strict=True):
            np.testing.assert_allclose(got, start + 0.5 * (t - start), rtol=1e-5, atol=1e-6)
    rounds = sorted(
        (r["name"], r["ownerInfo"]["currentRound"], r["status"])
        for r in reports
        if r.get("kind") == "train"
    )
    for i in range(len(SAMPLES)):
        assert (f"trainer-{i}", ROUNDS, "completed") in rounds
        assert (f"trainer-{i}", 1, "running") in rounds
    text = log.read_text(errors="replace")
    assert s3.secret_key not in text


class _CorruptingTransmitter(S3Transmitter):
    """Writes what the test says instead of the update (a broken or malicious trainer)."""

    body: bytes | None = None
    redirect: str | None = None

    def update_uri(self, session_id: str, round_number: int, client_id: str) -> str:
        return self.redirect or super().update_uri(session_id, round_number, client_id)

    def send(self, data: Any, uri: str | None = None, **kwargs: Any) -> str:
        if self.body is None:
            return super().send(data, uri, **kwargs)
        import boto3

        assert uri is not None
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.parameters["access_key"],
            aws_secret_access_key=self.parameters["secret_key"],
        ).put_object(Bucket=bucket, Key=key, Body=self.body)
        return uri


def test_corrupt_update_objects_are_refused_naming_the_problem(
    s3: S3Endpoint, aggregator: tuple[int, Path]
) -> None:
    port, _log = aggregator
    transmitter = _CorruptingTransmitter(s3.url, s3.access_key, s3.secret_key, DATA_PATH)
    good = [np.full(s, 0.25, np.float32) for s in SHAPES]
    with AggregationClient("127.0.0.1", port, timeout=20, transmitter=transmitter) as client:
        joined = client.join(
            "default/corrupt", "c1", 5, config={"exit_round": 1, "min_participants": 1}
        )
        assert joined.current_round == 1

        transmitter.body = b"\x00\x01not a safetensors object"
        with pytest.raises(UpdateRejectedError, match="header length prefix says") as info:
            client.push(1, good, sample_count=5)
        assert "c1.safetensors" in str(info.value)  # the object is named

        header = b'{"layer.0": {"dtype": "F32", "shape": [6, 4], "data_offsets": [0, 8]}}'
        transmitter.body = len(header).to_bytes(8, "little") + header + b"\0" * 8
        with pytest.raises(UpdateRejectedError, match=r"'layer\.0': data_offsets \[0, 8\] hold 8"):
            client.push(1, good, sample_count=5)

        transmitter.body = None
        nan = [w.copy() for w in good]
        nan[1][2] = np.nan
        with pytest.raises(UpdateRejectedError, match=r"layer 1 holds 1 NaN or infinite"):
            client.push(1, nan, sample_count=5)

        transmitter.redirect = "s3://elsewhere/jobs/stolen.safetensors"
        with pytest.raises(UpdateRejectedError, match="outside this job's AGG_DATA_PATH"):
            client.push(1, good, sample_count=5)
        transmitter.redirect = None

        # None of that touched the round: the good update is taken and is the aggregate.
        assert client.push(1, good, sample_count=5) == 1
        result = client.pull(1, timeout=30)
        assert result.round == 1
        assert result.exit
        for got, want in zip(result.weights, good, strict=True):
            np.testing.assert_array_equal(got, want)
