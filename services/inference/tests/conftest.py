"""Fixtures of the inference server tests: a tiny ONNX model and a started server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from sedna.api.oip.v2 import grpc_service_pb2_grpc as pb_grpc  # noqa: E402
from sedna.runtime import ServiceServer  # noqa: E402
from sedna.serving.errors import ModelNotReadyError  # noqa: E402
from sedna_inference import app  # noqa: E402
from sedna_inference.repository import ModelRepository, ModelState  # noqa: E402
from sedna_inference.settings import InferenceSettings  # noqa: E402

CLOUD_WORKER_ENV = (
    "MODEL_URL",
    "MODEL_FORMAT",
    "SERVICE_NAME",
    "JOB_NAME",
    "BIG_MODEL_NAME",
    "BIG_MODEL_BIND_IP",
    "BIG_MODEL_BIND_PORT",
)
"""The cloud worker environment InferenceSettings reads when no model is given."""


@pytest.fixture(autouse=True)
def _no_cloud_worker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test without the cloud worker environment.

    Otherwise ``InferenceSettings()``, in a shell that has it (a worker's, or after a test
    that leaked it), would serve ``MODEL_URL`` on ``BIG_MODEL_BIND_PORT``.
    """
    for key in CLOUD_WORKER_ENV:
        monkeypatch.delenv(key, raising=False)


LOAD_DEADLINE_S = 60.0
"""How long ``served`` waits for its model (wall clock): loads run in a thread that a busy
machine may starve, and pytest-timeout (120 s) still bounds the whole test."""
RNG = np.random.default_rng(7)
WEIGHT: npt.NDArray[np.float32] = RNG.standard_normal((4, 3)).astype(np.float32)
BIAS: npt.NDArray[np.float32] = RNG.standard_normal(3).astype(np.float32)


def expected(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """What the test model computes: ``x @ W + b``."""
    return x @ WEIGHT + BIAS


def write_linear_model(path: Path) -> Path:
    """Write ``y = x @ W + b`` with x FP32 [N, 4] (N dynamic), y FP32 [N, 3]."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[
            numpy_helper.from_array(WEIGHT, "W"),
            numpy_helper.from_array(BIAS, "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return write_linear_model(tmp_path / "linear.onnx")


@dataclass
class Served:
    server: ServiceServer
    repository: ModelRepository
    channel: grpc.aio.Channel
    stub: pb_grpc.GRPCInferenceServiceStub


async def start_served(settings: InferenceSettings) -> Served:
    server = ServiceServer(settings)
    repository = await app.setup(server, settings)
    await server.start()
    channel = grpc.aio.insecure_channel(server.address)
    return Served(server, repository, channel, pb_grpc.GRPCInferenceServiceStub(channel))


async def wait_ready(repository: ModelRepository) -> None:
    """Wait until every model is loaded; fail at once, with the reason, when one failed."""
    deadline = time.monotonic() + LOAD_DEADLINE_S
    while not repository.server_ready():
        for name in repository.names:
            if repository.state(name) is ModelState.FAILED:
                try:
                    repository.get(name)
                except ModelNotReadyError as exc:
                    pytest.fail(f"the model did not load: {exc}")
        if time.monotonic() > deadline:
            pytest.fail(f"the model did not load within {LOAD_DEADLINE_S:.0f} s")
        await asyncio.sleep(0.01)


@pytest.fixture
def max_queue_delay_ms() -> int:
    """The batcher's wait for more requests; batching tests override it with a wide margin."""
    return 5


@pytest.fixture
async def served(model_path: Path, max_queue_delay_ms: int) -> AsyncIterator[Served]:
    settings = InferenceSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        model_name="linear",
        model_path=model_path,
        max_batch_size=8,
        max_queue_delay_ms=max_queue_delay_ms,
    )
    running = await start_served(settings)
    await wait_ready(running.repository)
    try:
        yield running
    finally:
        await running.channel.close()
        await running.server.stop(grace=1)


@pytest.fixture
def linear_expected() -> object:
    """The reference ``x @ W + b`` of the test model, for tests (they cannot import conftest)."""
    return expected


def _hold_first_call(served: Served, seconds: float = 0.2) -> None:
    """Make the model's first backend call take ``seconds`` longer (on its worker thread).

    Batching tests send many requests at once and expect some to share a backend call. How
    fast those requests reach the server is up to the machine: on a loaded CI machine they
    came one after another and each was served alone before the next arrived (24 requests,
    24 calls). While the first call is held, the requests behind it queue up, so the next
    calls take them together whatever the machine's speed.
    """
    model = served.repository.get("linear")
    backend = model.backend
    infer = backend.infer
    first = threading.Event()

    def held(inputs: Any) -> Any:
        if not first.is_set():
            first.set()
            time.sleep(seconds)
        return infer(inputs)

    backend.infer = held  # type: ignore[method-assign]


@pytest.fixture
def hold_first_call() -> Callable[..., None]:
    """:func:`_hold_first_call`, for test modules (they cannot import conftest)."""
    return _hold_first_call
