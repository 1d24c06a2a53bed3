"""BigModelService serving user estimators, called through InferenceClient."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sedna.common.errors import SednaError
from sedna.core.joint_inference.big_model import BigModelService, NotSupportedError
from sedna.service.oip_client import InferenceClient

pytestmark = pytest.mark.filterwarnings("ignore:SKLEARN Not Support yet:UserWarning")

DEADLINE_S = 30.0


class Scaler:
    """``predict(x) = x * w``; ``load`` reads ``w`` from a ``.npy`` file."""

    def __init__(self) -> None:
        self.weight = np.float32(1.0)
        self.calls: list[tuple[int, ...]] = []

    def load(self, model_url: str) -> None:
        self.weight = np.load(model_url).astype(np.float32)

    def predict(self, data: npt.NDArray[np.float32], **kwargs: Any) -> npt.NDArray[np.float32]:
        self.calls.append(tuple(np.shape(data)))
        return np.asarray(data, np.float32) * self.weight


class Labeller:
    """Returns Python objects: a dict per call."""

    def predict(self, data: Any) -> dict[str, Any]:
        array = np.asarray(data)
        return {"label": "cat" if array.sum() > 0 else "dog", "shape": list(array.shape)}


class BatchLabeller:
    """Takes batches; returns one label per row; the first call waits for ``release``."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.rows: list[int] = []

    def predict(self, data: npt.NDArray[np.float32]) -> list[str]:
        assert self.release.wait(DEADLINE_S)
        self.rows.append(int(data.shape[0]))
        return [f"row-{int(row[0])}" for row in data]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The cloud worker's environment on loopback with a free port."""
    monkeypatch.setenv("BACKEND_TYPE", "SKLEARN")
    monkeypatch.setenv("SERVICE_NAME", "ji-demo")
    monkeypatch.setenv("BIG_MODEL_BIND_IP", "127.0.0.1")
    monkeypatch.setenv("BIG_MODEL_BIND_PORT", "0")
    return monkeypatch


@pytest.fixture
def run() -> Iterator[Callable[[BigModelService], InferenceClient]]:
    """``run(service) -> client``: start the service in a thread; stopped after the test."""
    started: list[tuple[BigModelService, threading.Thread, InferenceClient]] = []

    def start(service: BigModelService) -> InferenceClient:
        thread = threading.Thread(target=service.start, daemon=True)
        thread.start()
        assert service.wait_serving(DEADLINE_S), "BigModelService did not start"
        client = InferenceClient("127.0.0.1", service.port, service.model_name, timeout=10)
        started.append((service, thread, client))
        return client

    yield start
    for service, thread, client in started:
        client.close()
        service.stop(grace=1)
        thread.join(DEADLINE_S)
        assert not thread.is_alive()


def test_numeric_estimator_loaded_from_model_url(
    env: pytest.MonkeyPatch, tmp_path: Path, run: Callable[[BigModelService], InferenceClient]
) -> None:
    weights = tmp_path / "w.npy"
    np.save(weights, np.array([1.0, 10.0, 100.0], np.float32))
    env.setenv("MODEL_URL", str(weights))
    service = BigModelService(estimator=Scaler)
    assert service.model_name == "ji-demo"
    client = run(service)
    assert client.ready()
    meta = client.metadata()
    assert meta.name == "ji-demo"
    assert meta.inputs == ()  # nothing declared: data goes as it is
    y = client.infer(np.ones((2, 3), np.float32))
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, [[1, 10, 100], [1, 10, 100]])
    y = client.infer([1, 2, 3])  # int64 stays int64 on the wire; the estimator casts
    np.testing.assert_array_equal(y, [1, 20, 300])


def test_json_results(env: pytest.MonkeyPatch, run: Callable[..., InferenceClient]) -> None:
    env.setenv("BIG_MODEL_NAME", "labels")
    client = run(BigModelService(estimator=Labeller()))
    assert client.model_name == "labels"
    assert client.infer(np.ones((2, 2))) == {"label": "cat", "shape": [2, 2]}
    assert client.infer(np.zeros(3, np.uint8)) == {"label": "dog", "shape": [3]}


def test_declared_input_casts_and_adds_the_batch_dimension(
    env: pytest.MonkeyPatch, run: Callable[..., InferenceClient]
) -> None:
    env.setenv("BIG_MODEL_INPUT_SHAPE", "-1,3")
    estimator = Scaler()
    client = run(BigModelService(estimator=estimator))
    meta = client.metadata()
    assert [(t.name, t.datatype, t.shape) for t in meta.inputs] == [("data", "FP32", (-1, 3))]
    y = client.infer([1, 2, 3])
    assert y.dtype == np.float32
    assert y.shape == (3,)
    assert estimator.calls == [(1, 3)]


def _started_infers(metrics_port: int) -> float:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "grpc_server_started_total"
                and sample.labels.get("grpc_method") == "ModelInfer"
            ):
                total += sample.value
    return total


def test_dynamic_batching_with_per_row_json_results(
    env: pytest.MonkeyPatch, run: Callable[..., InferenceClient]
) -> None:
    env.setenv("BIG_MODEL_INPUT_SHAPE", "-1,2")
    env.setenv("BIG_MODEL_MAX_BATCH_SIZE", "8")
    env.setenv("BIG_MODEL_MAX_QUEUE_DELAY_MS", "50")
    env.setenv("METRICS_PORT", "0")
    estimator = BatchLabeller()
    service = BigModelService(estimator=estimator)
    client = run(service)
    assert service.metrics_port
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client.infer, [float(i), 0.0]) for i in range(8)]
        deadline = time.monotonic() + DEADLINE_S
        while _started_infers(service.metrics_port) < 8:  # every call reached the server
            assert time.monotonic() < deadline, "the calls did not reach the server"
            time.sleep(0.01)
        estimator.release.set()
        results = [future.result(DEADLINE_S) for future in futures]
    assert results == [[f"row-{i}"] for i in range(8)]
    assert sum(estimator.rows) == 8
    assert max(estimator.rows) > 1


def test_batching_needs_a_declared_batch_dimension(env: pytest.MonkeyPatch) -> None:
    env.setenv("BIG_MODEL_MAX_BATCH_SIZE", "4")
    with pytest.raises(SednaError, match="BIG_MODEL_INPUT_SHAPE"):
        BigModelService(estimator=Scaler)
    env.setenv("BIG_MODEL_INPUT_SHAPE", "3,-1")
    with pytest.raises(SednaError, match="variable"):
        BigModelService(estimator=Scaler)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BIG_MODEL_BIND_PORT", "http"),
        ("BIG_MODEL_MAX_BATCH_SIZE", "0"),
        ("BIG_MODEL_INPUT_SHAPE", "a,b"),
        ("METRICS_PORT", "-1"),
    ],
)
def test_bad_environment_is_reported(env: pytest.MonkeyPatch, name: str, value: str) -> None:
    env.setenv(name, value)
    with pytest.raises(SednaError, match=name):
        BigModelService(estimator=Scaler)


def test_train_is_not_supported(env: pytest.MonkeyPatch) -> None:
    service = BigModelService(estimator=Scaler)
    with pytest.raises(NotSupportedError, match="does not train") as caught:
        service.train()
    assert isinstance(caught.value, NotImplementedError)
    assert isinstance(caught.value, SednaError)


def test_inference_applies_post_process(env: pytest.MonkeyPatch) -> None:
    service = BigModelService(estimator=Scaler)
    assert service.inference(np.ones(2), post_process=lambda y: y.sum()) == 2.0


def test_missing_model_fails_start(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("MODEL_URL", str(tmp_path / "missing.npy"))
    with pytest.raises(FileNotFoundError, match=r"missing\.npy"):
        BigModelService(estimator=Scaler).start()


def test_no_estimator_fails_start(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(SednaError, match="no estimator"):
        BigModelService().start()


WORKER_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from sedna.core.joint_inference import BigModelService

    class Estimator:
        def load(self, model_url):
            self.weight = np.load(model_url)

        def predict(self, data, **kwargs):
            return data @ self.weight

    BigModelService(estimator=Estimator).start()
    """
)


@pytest.mark.slow
def test_worker_script_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    np.save(tmp_path / "w.npy", np.eye(3, dtype=np.float64) * 2)
    script = tmp_path / "cloud_worker.py"
    script.write_text(WORKER_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEDNA_", "BIG_MODEL_"))}
    env.update(
        BACKEND_TYPE="SKLEARN",
        SERVICE_NAME="helmet",
        MODEL_URL=str(tmp_path / "w.npy"),
        BIG_MODEL_BIND_IP="127.0.0.1",
        BIG_MODEL_BIND_PORT="0",
    )
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        port = None
        deadline = time.monotonic() + DEADLINE_S
        while port is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line, "the worker exited before it served"
            if not line.startswith("{"):
                continue  # e.g. the BACKEND_TYPE warning
            record = json.loads(line)
            if record.get("message") == "gRPC server started":
                port = record["port"]
        assert isinstance(port, int)
        with InferenceClient("127.0.0.1", port, "helmet", timeout=10) as client:
            np.testing.assert_array_equal(client.infer([1.0, 2.0, 3.0]), [2.0, 4.0, 6.0])
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE_S) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
