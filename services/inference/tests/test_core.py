"""The core without ONNX: batching, readiness and backend failures with fake backends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from sedna.api.oip.v2 import grpc_service_pb2 as pb
from sedna.api.oip.v2 import grpc_service_pb2_grpc as pb_grpc
from sedna.runtime import ServiceServer
from sedna.serving import (
    BackendMetadata,
    InferenceMetrics,
    InputTensor,
    TensorSpec,
    datatype_of,
    numpy_dtype,
)
from sedna_inference import app
from sedna_inference.repository import ModelConfig, ModelRepository
from sedna_inference.settings import InferenceSettings

Array = npt.NDArray[np.generic]


class DoublingBackend:
    """y = 2 * x; the first call blocks until ``release`` is set; records batch rows."""

    def __init__(self, *, fail: bool = False) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.rows: list[int] = []
        self.fail = fail

    def metadata(self) -> BackendMetadata:
        return BackendMetadata(
            "fake",
            (TensorSpec("x", "FP32", (-1, 2)),),
            (TensorSpec("y", "FP32", (-1, 2)),),
        )

    def infer(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        self.entered.set()
        assert self.release.wait(10)
        if self.fail:
            raise RuntimeError("kernel exploded\n  File 'secret.py', line 1")
        x = inputs["x"]
        self.rows.append(int(x.shape[0]))
        return {"y": np.asarray(x) * 2}


def _input(value: float) -> list[InputTensor]:
    x = np.full((1, 2), value, dtype=np.float32)
    return [InputTensor("x", "FP32", (1, 2), x)]


REGISTRIES: dict[int, CollectorRegistry] = {}


async def _repository(backend: Any, max_batch_size: int = 8) -> ModelRepository:
    registry = CollectorRegistry()
    repo = ModelRepository(InferenceMetrics(registry), loader=lambda _p, **_: backend)
    REGISTRIES[id(repo)] = registry
    repo.configure(
        ModelConfig("m", Path("m.fake"), max_batch_size=max_batch_size, max_queue_delay_ms=50)
    )
    await repo.load("m")
    return repo


def _registry(repo: ModelRepository) -> CollectorRegistry:
    return REGISTRIES[id(repo)]


async def test_batcher_batches_queued_requests() -> None:
    backend = DoublingBackend()
    repo = await _repository(backend)
    model = repo.get("m")
    first = asyncio.create_task(model.infer(_input(0)))
    assert await asyncio.to_thread(backend.entered.wait, 10)  # the worker is busy with #0
    rest = [asyncio.create_task(model.infer(_input(i))) for i in range(1, 8)]
    await asyncio.sleep(0)  # let the seven requests reach the queue
    backend.release.set()
    results = await asyncio.gather(first, *rest)
    assert backend.rows == [1, 7]
    for i, outputs in enumerate(results):
        np.testing.assert_array_equal(outputs[0].data, np.full((1, 2), 2 * i, np.float32))
    registry = _registry(repo)
    assert registry.get_sample_value("sedna_inference_batch_size_count", {"model": "m"}) == 2
    assert registry.get_sample_value("sedna_inference_batch_size_sum", {"model": "m"}) == 8
    await repo.close()


async def test_batch_size_one_turns_batching_off() -> None:
    backend = DoublingBackend()
    repo = await _repository(backend, max_batch_size=1)
    model = repo.get("m")
    first = asyncio.create_task(model.infer(_input(0)))
    assert await asyncio.to_thread(backend.entered.wait, 10)
    rest = [asyncio.create_task(model.infer(_input(i))) for i in range(1, 4)]
    await asyncio.sleep(0)
    backend.release.set()
    await asyncio.gather(first, *rest)
    assert backend.rows == [1, 1, 1, 1]
    await repo.close()


async def test_backend_failure_is_internal_without_a_trace() -> None:
    backend = DoublingBackend(fail=True)
    backend.release.set()
    settings = InferenceSettings(host="127.0.0.1", port=0, metrics_port=None)
    server = ServiceServer(settings)
    repo = await app.setup(server, settings, loader=lambda _p, **_: backend)
    repo.configure(ModelConfig("m", Path("m.fake")))
    await repo.load("m")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            request = pb.ModelInferRequest(model_name="m")
            request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
            request.raw_input_contents.append(np.zeros((1, 2), np.float32).tobytes())
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        details = caught.value.details() or ""
        assert "kernel exploded" in details
        assert "secret.py" not in details
        assert "Traceback" not in details
    finally:
        await server.stop(grace=1)


async def test_not_ready_until_loaded(tmp_path: Path) -> None:
    gate = threading.Event()
    backend = DoublingBackend()
    backend.release.set()

    def slow_loader(_path: Path, *, model_format: str | None = None) -> DoublingBackend:
        assert gate.wait(10)
        return backend

    model_file = tmp_path / "m.fake"
    settings = InferenceSettings(
        host="127.0.0.1", port=0, metrics_port=None, model_name="m", model_path=model_file
    )
    server = ServiceServer(settings)
    await app.setup(server, settings, loader=slow_loader)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            assert not (await stub.ServerReady(pb.ServerReadyRequest())).ready
            assert not (await stub.ModelReady(pb.ModelReadyRequest(name="m"))).ready
            check = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
            request = pb.ModelInferRequest(model_name="m")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ModelInfer(request)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            gate.set()
            for _ in range(1000):
                if (await stub.ServerReady(pb.ServerReadyRequest())).ready:
                    break
                await asyncio.sleep(0.01)
            assert (await stub.ModelReady(pb.ModelReadyRequest(name="m"))).ready
            check = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert check.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        gate.set()
        await server.stop(grace=1)


@pytest.mark.parametrize(
    "datatype",
    [
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
        "BYTES",
    ],
)
def test_datatype_round_trip(datatype: str) -> None:
    assert datatype_of(numpy_dtype(datatype)) == datatype


def test_settings_need_name_and_path_together() -> None:
    with pytest.raises(ValueError, match="together"):
        InferenceSettings(model_name="m")


UPSTREAM_KEYS = (
    "MODEL_URL",
    "SERVICE_NAME",
    "JOB_NAME",
    "BIG_MODEL_NAME",
    "BIG_MODEL_BIND_IP",
    "BIG_MODEL_BIND_PORT",
    "MODEL_FORMAT",
)


@pytest.fixture
def upstream_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A JointInferenceService cloud worker's environment (and nothing of ours)."""
    for key in UPSTREAM_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MODEL_URL", "/models/big.onnx")
    monkeypatch.setenv("SERVICE_NAME", "helmet")
    monkeypatch.setenv("BIG_MODEL_BIND_PORT", "5005")
    return monkeypatch


def test_settings_serve_the_upstream_cloud_worker_env(upstream_env: pytest.MonkeyPatch) -> None:
    settings = InferenceSettings()
    assert (settings.model_name, settings.model_path) == ("helmet", "/models/big.onnx")
    assert (settings.host, settings.port) == ("0.0.0.0", 5005)
    upstream_env.setenv("BIG_MODEL_NAME", "big")
    upstream_env.setenv("BIG_MODEL_BIND_IP", "10.0.0.7")
    settings = InferenceSettings()
    assert (settings.model_name, settings.host) == ("big", "10.0.0.7")


def test_explicit_settings_win_over_the_upstream_env(upstream_env: pytest.MonkeyPatch) -> None:
    settings = InferenceSettings(host="127.0.0.1", port=0)
    assert settings.model_name == "helmet"
    assert (settings.host, settings.port) == ("127.0.0.1", 0)
    settings = InferenceSettings(model_name="m", model_path="m.onnx")
    assert (settings.model_name, settings.model_path, settings.port) == ("m", "m.onnx", 8001)


def test_upstream_env_needs_a_model_url_and_a_name(upstream_env: pytest.MonkeyPatch) -> None:
    upstream_env.delenv("MODEL_URL")
    settings = InferenceSettings()
    assert settings.model_name is None
    assert settings.port == 8001
    upstream_env.setenv("MODEL_URL", "/m.onnx")
    upstream_env.delenv("SERVICE_NAME")
    upstream_env.setenv("JOB_NAME", "job")
    assert InferenceSettings().model_name == "job"


def test_upstream_env_model_format(upstream_env: pytest.MonkeyPatch) -> None:
    assert InferenceSettings().model_format is None
    upstream_env.setenv("MODEL_FORMAT", " onnx ")
    assert InferenceSettings().model_format == "onnx"
    assert InferenceSettings(model_format="pt").model_format == "pt"  # the flag wins
    upstream_env.setenv("SEDNA_INFERENCE_MODEL_FORMAT", "keras")
    assert InferenceSettings().model_format == "keras"  # so does our variable


def test_model_format_env_is_read_only_as_a_cloud_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_FORMAT", "onnx")  # no MODEL_URL: not a cloud worker
    assert InferenceSettings().model_format is None
    explicit = InferenceSettings(model_name="m", model_path="m", model_format="  ")
    assert explicit.model_format is None  # blank means none
    monkeypatch.setenv("SEDNA_INFERENCE_MODEL_FORMAT", "pt")
    assert InferenceSettings(model_name="m", model_path="m").model_format == "pt"


async def test_model_format_reaches_the_loader(tmp_path: Path) -> None:
    backend = DoublingBackend()
    backend.release.set()
    seen: list[tuple[Path, str | None]] = []

    def loader(path: Path, *, model_format: str | None = None) -> DoublingBackend:
        seen.append((path, model_format))
        return backend

    model_file = tmp_path / "download"
    settings = InferenceSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        model_name="m",
        model_path=model_file,
        model_format="onnx",
    )
    server = ServiceServer(settings)
    repo = await app.setup(server, settings, loader=loader)
    await server.start()
    try:
        for _ in range(1000):
            if repo.server_ready():
                break
            await asyncio.sleep(0.01)
        assert seen == [(model_file, "onnx")]
    finally:
        await server.stop(grace=1)


def test_upstream_env_bad_port(upstream_env: pytest.MonkeyPatch) -> None:
    upstream_env.setenv("BIG_MODEL_BIND_PORT", "five")
    with pytest.raises(ValueError, match="BIG_MODEL_BIND_PORT"):
        InferenceSettings()
