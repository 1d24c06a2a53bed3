"""Fixtures for the job classes: a clean worker env, a fake LC, a real OIP gRPC cloud."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import numpy as np
import pytest

from sedna.api.oip.v2 import grpc_service_pb2 as pb
from sedna.api.oip.v2 import grpc_service_pb2_grpc as pb_grpc
from sedna.common.config import BaseConfig
from sedna.service.client import LCClient

JOB_ENV = (
    "BACKEND_TYPE",
    "DEVICE_CATEGORY",
    "CUDA_VISIBLE_DEVICES",
    "MODEL_URL",
    "MODEL_NAME",
    "MODEL_LOAD_MODE",
    "MODEL_HOT_UPDATE",
    "MODEL_HOT_UPDATE_CONFIG",
    "MODEL_POLL_PERIOD_SECONDS",
    "MODEL_PATH",
    "JOB_NAME",
    "SERVICE_NAME",
    "WORKER_NAME",
    "NAMESPACE",
    "LC_SERVER",
    "LC_PERIOD",
    "BIG_MODEL_IP",
    "BIG_MODEL_PORT",
    "BIG_MODEL_NAME",
    "CLOUD_INFERENCE_TIMEOUT",
    "MINING_MODE",
    "HEM_NAME",
    "HEM_PARAMETERS",
)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in JOB_ENV:
        monkeypatch.setenv(name, "")  # recorded, so what set_backend writes is undone
        monkeypatch.delenv(name)
    # A reporter would otherwise post to the default LC; point it at a closed port.
    monkeypatch.setenv("LC_SERVER", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("LC_PERIOD", "3600")
    monkeypatch.setenv("BACKEND_TYPE", "SKLEARN")
    monkeypatch.setattr(LCClient, "retry_interval", 0.01)
    monkeypatch.setattr(LCClient, "retries", 1)
    BaseConfig.reset()
    LCClient.reset_log_state()
    yield
    BaseConfig.reset()


class FakeLC:
    """Records ``POST /sedna/workers/{name}/info`` bodies; answers 200."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                fake.requests.append((self.path, json.loads(self.rfile.read(length))))
                data = b'{"Status": 200, "Message": "OK"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def lc(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLC]:
    fake = FakeLC()
    monkeypatch.setenv("LC_SERVER", fake.url)
    yield fake
    fake.close()


class CloudServer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """A real OIP v2 gRPC server: FP32 input ``x`` [-1, features] → output ``result``.

    ``mode`` is ``"ok"`` (answers ``model(x)``), ``"stall"`` (ModelInfer blocks until the
    server closes: the client's deadline must end the call) or ``"error"`` (INTERNAL).
    """

    def __init__(
        self, model: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]], features: int
    ) -> None:
        self.model = model
        self.features = features
        self.mode = "ok"
        self.calls = 0
        self.release = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC name
        return pb.ModelMetadataResponse(
            name=request.name,
            platform="test",
            inputs=[
                pb.ModelMetadataResponse.TensorMetadata(
                    name="x", datatype="FP32", shape=[-1, self.features]
                )
            ],
            outputs=[
                pb.ModelMetadataResponse.TensorMetadata(name="result", datatype="FP32", shape=[-1])
            ],
        )

    def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC name
        self.calls += 1
        if self.mode == "stall":
            self.release.wait(30)
            context.abort(grpc.StatusCode.CANCELLED, "released")
        if self.mode == "error":
            context.abort(grpc.StatusCode.INTERNAL, "the big model crashed")
        shape = list(request.inputs[0].shape)
        x = np.frombuffer(request.raw_input_contents[0], dtype="<f4").reshape(shape)
        y = np.asarray(self.model(x), dtype="<f4")
        return pb.ModelInferResponse(
            model_name=request.model_name,
            outputs=[
                pb.ModelInferResponse.InferOutputTensor(
                    name="result", datatype="FP32", shape=list(y.shape)
                )
            ],
            raw_output_contents=[y.tobytes()],
        )

    def close(self) -> None:
        self.release.set()
        self.server.stop(0).wait()


@pytest.fixture
def cloud_server() -> Iterator[Callable[..., CloudServer]]:
    servers: list[CloudServer] = []

    def start(
        model: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]], features: int = 4
    ) -> CloudServer:
        servers.append(CloudServer(model, features))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def digits() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target
