"""The sync InferenceClient against real OIP servers on loopback."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np
import pytest

from sedna.common.errors import SednaError
from sedna.runtime import ChannelConfig
from sedna.service.oip_client import CloudInferenceError, CloudUnavailableError, InferenceClient
from sedna.serving.estimator import EstimatorBackend, encode_result

Serve = Callable[..., int]

SHORT_TIMEOUT = 0.5


@pytest.fixture
def scale(serve: Serve, fakes: SimpleNamespace) -> Iterator[InferenceClient]:
    """A client of model ``scale`` (y = 2x, x FP32 [-1, 2])."""
    port = serve({"scale": (fakes.ScaleBackend(), None)})
    with InferenceClient("127.0.0.1", port, "scale", timeout=10) as client:
        yield client


def test_infer_adds_and_strips_the_batch_dimension(scale: InferenceClient) -> None:
    y = scale.infer([1, 2])  # ints, rank 1: cast to FP32 and sent as [1, 2]
    assert isinstance(y, np.ndarray)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, np.array([2, 4], np.float32))


def test_infer_keeps_a_given_batch_dimension(scale: InferenceClient) -> None:
    x = np.arange(6, dtype=np.float64).reshape(3, 2)
    y = scale.infer(x)
    assert y.shape == (3, 2)
    np.testing.assert_array_equal(y, (2 * x).astype(np.float32))


def test_metadata_is_fetched_once_and_ready(scale: InferenceClient) -> None:
    meta = scale.metadata()
    assert scale.metadata() is meta
    assert [(t.name, t.datatype, t.shape) for t in meta.inputs] == [("x", "FP32", (-1, 2))]
    assert scale.ready()


def test_several_outputs_come_back_by_name(serve: Serve, fakes: SimpleNamespace) -> None:
    port = serve({"two": (fakes.TwoOutputBackend(), None)})
    with InferenceClient("127.0.0.1", port, "two") as client:
        result = client.infer([1, 2, 3])
    assert set(result) == {"sum", "neg"}
    assert result["sum"] == 6
    assert result["sum"].dtype == np.int64
    np.testing.assert_array_equal(result["neg"], [-1, -2, -3])


def _describe(data: Any) -> Any:
    array = np.asarray(data)
    return {"shape": list(array.shape), "mean": float(array.mean()), "tags": ["a", None]}


def test_json_result_is_decoded(serve: Serve) -> None:
    backend = EstimatorBackend(_describe)  # no declared input: data is sent as it is
    port = serve({"json": (backend, encode_result)})
    with InferenceClient("127.0.0.1", port, "json") as client:
        result = client.infer(np.ones((2, 3), np.uint8))
    assert result == {"shape": [2, 3], "mean": 1.0, "tags": ["a", None]}


def test_typed_result_without_declared_input(serve: Serve) -> None:
    port = serve({"echo": (EstimatorBackend(lambda x: x * 2), encode_result)})
    with InferenceClient("127.0.0.1", port, "echo") as client:
        y = client.infer(np.array([[1, 2]], np.int16))
    assert y.dtype == np.int16
    np.testing.assert_array_equal(y, [[2, 4]])


def test_invalid_argument_names_the_input(scale: InferenceClient) -> None:
    with pytest.raises(CloudInferenceError) as caught:
        scale.infer(np.zeros(3, np.float32))  # sent as [1, 3]; the model wants [-1, 2]
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    message = str(caught.value)
    assert "INVALID_ARGUMENT" in message
    assert "'x'" in message
    assert "[-1, 2]" in message
    assert isinstance(caught.value, SednaError)


def test_unknown_model_is_an_inference_error_and_not_ready(
    serve: Serve, fakes: SimpleNamespace
) -> None:
    port = serve({"scale": (fakes.ScaleBackend(), None)})
    with InferenceClient("127.0.0.1", port, "other") as client:
        assert not client.ready()
        with pytest.raises(CloudInferenceError, match="NOT_FOUND"):
            client.infer([1.0, 2.0])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_absent_server_is_unavailable() -> None:
    with InferenceClient("127.0.0.1", _free_port(), "m", timeout=SHORT_TIMEOUT) as client:
        assert not client.ready()
        with pytest.raises(CloudUnavailableError) as caught:
            client.infer([1.0, 2.0])
    assert caught.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_silent_server_hits_the_deadline() -> None:
    """A peer that accepts TCP connections but never speaks HTTP/2."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        with (
            InferenceClient("127.0.0.1", port, "m", timeout=SHORT_TIMEOUT) as client,
            pytest.raises(CloudUnavailableError) as caught,
        ):
            client.infer([1.0, 2.0])
    assert caught.value.code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)


def test_stalled_model_hits_the_deadline(serve: Serve, fakes: SimpleNamespace) -> None:
    backend = fakes.ScaleBackend(blocking=True)
    port = serve({"slow": (backend, None)})
    try:
        with (
            InferenceClient("127.0.0.1", port, "slow", timeout=SHORT_TIMEOUT) as client,
            pytest.raises(CloudUnavailableError) as caught,
        ):
            client.infer([1.0, 2.0])
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "DEADLINE_EXCEEDED" in str(caught.value)
    finally:
        backend.release.set()


def test_channel_config_keeps_its_options_but_not_its_target(
    serve: Serve, fakes: SimpleNamespace
) -> None:
    port = serve({"scale": (fakes.ScaleBackend(), None)})
    config = ChannelConfig(target="elsewhere:1", max_receive_message_bytes=1 << 20)
    with InferenceClient("127.0.0.1", port, "scale", channel_config=config) as client:
        assert client.target == f"127.0.0.1:{port}"
        np.testing.assert_array_equal(client.infer([1, 1]), [2, 2])


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"timeout": 0}, "timeout"), ({"model_name": ""}, "model_name")]
)
def test_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    arguments: dict[str, Any] = {"model_name": "m", **kwargs}
    with pytest.raises(ValueError, match=match):
        InferenceClient("127.0.0.1", 1, **arguments)
