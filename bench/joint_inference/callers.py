"""How each path is called: one caller object per client thread, ``caller(x) -> output``.

- ours: ``sedna.service.oip_client.InferenceClient.infer`` (the edge's JointInference
  offload) against ``sedna-inference``; while that module does not exist, the same OIP v2
  ``ModelInfer`` with ``raw_input_contents`` through the generated stubs.
- http: ``requests.Session.post(url, json={"data": x.tolist()})``, ``np.asarray(result)``
  (upstream ``ModelClient.inference`` after ``JointInference`` called ``data.tolist()``).
- floor / floor+model: the raw bytes of ``x`` on a plain gRPC channel to ``bench.Floor``.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any, Final, Protocol

import grpc
import numpy as np
import numpy.typing as npt
import requests

from sedna.api.oip.v2 import grpc_service_pb2 as pb
from sedna.api.oip.v2 import grpc_service_pb2_grpc as pb_grpc

from .floor_server import ECHO, MAX_MESSAGE_BYTES, RUN, STATS
from .model import NUM_CLASSES

__all__ = [
    "Caller",
    "EchoCaller",
    "FloorModelCaller",
    "HttpCaller",
    "OffloadCaller",
    "floor_stats",
    "offload_client_kind",
]

Array = npt.NDArray[np.float32]
TIMEOUT_S: Final = 30.0
"""Deadline of one call: generous, a missed deadline is an error here, not a data point."""
_CHANNEL_OPTIONS: Final = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


class Caller(Protocol):
    """One client of one path."""

    def __call__(self, x: Array) -> Array:
        """Send ``x`` and return the model's output (or the echo's reply)."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


def offload_client_kind() -> str:
    """``"InferenceClient"`` when ``sedna.service.oip_client`` exists, else ``"stubs"``."""
    if importlib.util.find_spec("sedna.service.oip_client") is not None:
        return "InferenceClient"
    return "stubs"


class _StubClient:
    """Stand-in for ``InferenceClient`` (same wire: ModelMetadata once, raw ModelInfer)."""

    def __init__(self, host: str, port: int, model_name: str, timeout: float) -> None:
        self._channel = grpc.insecure_channel(f"{host}:{port}", options=_CHANNEL_OPTIONS)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._model = model_name
        self._timeout = timeout
        meta = self._stub.ModelMetadata(pb.ModelMetadataRequest(name=model_name), timeout=timeout)
        self._input = meta.inputs[0]

    def infer(self, data: Any) -> Array:
        array = np.ascontiguousarray(data, dtype="<f4")
        request = pb.ModelInferRequest(model_name=self._model)
        request.inputs.add(name=self._input.name, datatype="FP32", shape=list(array.shape))
        request.raw_input_contents.append(array.tobytes())
        response = self._stub.ModelInfer(request, timeout=self._timeout)
        out = response.outputs[0]
        return np.frombuffer(response.raw_output_contents[0], "<f4").reshape(list(out.shape))

    def close(self) -> None:
        self._channel.close()


class OffloadCaller:
    """Our offload path: ``InferenceClient.infer``, or :class:`_StubClient` (``"stubs"``)."""

    def __init__(self, host: str, port: int, model_name: str, *, client: str) -> None:
        if client == "InferenceClient":
            from sedna.service.oip_client import (  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415
                InferenceClient,
            )

            self._client: Any = InferenceClient(host, port, model_name, timeout=TIMEOUT_S)
        else:
            self._client = _StubClient(host, port, model_name, TIMEOUT_S)

    def __call__(self, x: Array) -> Array:
        return np.asarray(self._client.infer(x), dtype=np.float32)

    def close(self) -> None:
        self._client.close()


class HttpCaller:
    """Upstream style: JSON lists of floats to ``POST /{service}/predict``."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._session = requests.Session()

    def __call__(self, x: Array) -> Array:
        response = self._session.post(self._url, json={"data": x.tolist()}, timeout=TIMEOUT_S)
        response.raise_for_status()
        return np.asarray(response.json()["result"], dtype=np.float32)

    def close(self) -> None:
        self._session.close()


class _BytesCaller:
    def __init__(self, target: str, method: str) -> None:
        self._channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(method)

    def _send(self, x: Array) -> bytes:
        reply: bytes = self._call(x.tobytes(), timeout=TIMEOUT_S)
        return reply

    def close(self) -> None:
        self._channel.close()


class EchoCaller(_BytesCaller):
    """The transport floor: the tensor's bytes out, 40 bytes back, no model."""

    def __init__(self, target: str) -> None:
        super().__init__(target, ECHO)

    def __call__(self, x: Array) -> Array:
        return np.frombuffer(self._send(x), "<f4").reshape(1, NUM_CLASSES)


class FloorModelCaller(_BytesCaller):
    """The floor plus the model: the tensor's bytes out, the logits' bytes back."""

    def __init__(self, target: str) -> None:
        super().__init__(target, RUN)

    def __call__(self, x: Array) -> Array:
        return np.frombuffer(self._send(x), "<f4").reshape(-1, NUM_CLASSES)


def floor_stats(target: str) -> list[float]:
    """The floor server's ``session.run`` durations (seconds) since the last call."""
    with grpc.insecure_channel(target) as channel:
        stats: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(STATS)
        reply = stats(b"", timeout=TIMEOUT_S)
    values: list[float] = json.loads(reply)["compute_s"]
    return values
