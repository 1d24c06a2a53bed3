"""The OIP v2 gRPC server over a real ONNX model: metadata, numerics, errors, batching."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest

from sedna.api.oip.v2 import grpc_service_pb2 as pb
from sedna.service.oip_client import CloudInferenceError, InferenceClient

pytestmark = pytest.mark.asyncio

Served = Any  # conftest.Served (test modules cannot import conftest in importlib mode)
Expected = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


def raw_request(
    x: npt.NDArray[np.generic], *, name: str = "x", datatype: str = "FP32", model: str = "linear"
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id="r1")
    request.inputs.add(name=name, datatype=datatype, shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    return request


def output_array(response: pb.ModelInferResponse, index: int = 0) -> npt.NDArray[np.float32]:
    out = response.outputs[index]
    assert out.datatype == "FP32"
    return np.frombuffer(response.raw_output_contents[index], dtype="<f4").reshape(list(out.shape))


async def counted(registry: Any, labels: dict[str, str], expected: int) -> None:
    """The server counts a request after its status reached the client: wait for the count."""
    for _ in range(500):
        if registry.get_sample_value("sedna_inference_requests_total", labels) == expected:
            return
        await asyncio.sleep(0.01)
    value = registry.get_sample_value("sedna_inference_requests_total", labels)
    raise AssertionError(f"requests_total{labels} is {value}, expected {expected}")


async def test_health_and_metadata_rpcs(served: Served) -> None:
    stub = served.stub
    assert (await stub.ServerLive(pb.ServerLiveRequest())).live
    assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
    assert (await stub.ModelReady(pb.ModelReadyRequest(name="linear"))).ready
    assert (await stub.ModelReady(pb.ModelReadyRequest(name="linear", version="1"))).ready
    server_meta = await stub.ServerMetadata(pb.ServerMetadataRequest())
    assert server_meta.name == "sedna-inference"
    assert server_meta.version
    meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="linear"))
    assert meta.name == "linear"
    assert list(meta.versions) == ["1"]
    assert meta.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("x", "FP32", [-1, 4])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("y", "FP32", [-1, 3])]


async def test_raw_infer_matches_numpy(served: Served, linear_expected: Expected) -> None:
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    response = await served.stub.ModelInfer(raw_request(x))
    assert response.model_name == "linear"
    assert response.model_version == "1"
    assert response.id == "r1"
    assert response.outputs[0].name == "y"
    np.testing.assert_allclose(output_array(response), linear_expected(x), rtol=1e-5, atol=1e-6)


async def test_typed_contents_infer_matches_numpy(
    served: Served, linear_expected: Expected
) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 7
    request = pb.ModelInferRequest(model_name="linear")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 4])
    tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    request.outputs.add(name="y")
    response = await served.stub.ModelInfer(request)
    np.testing.assert_allclose(output_array(response), linear_expected(x), rtol=1e-5, atol=1e-6)


async def test_concurrent_requests_get_their_own_rows(
    served: Served, linear_expected: Expected
) -> None:
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((1 + i % 3, 4)).astype(np.float32) for i in range(24)]
    responses = await asyncio.gather(*(served.stub.ModelInfer(raw_request(x)) for x in xs))
    for x, response in zip(xs, responses, strict=True):
        np.testing.assert_allclose(output_array(response), linear_expected(x), rtol=1e-5, atol=1e-6)
    registry = served.server.registry
    await counted(registry, {"model": "linear", "status": "ok"}, len(xs))
    batches = registry.get_sample_value("sedna_inference_batch_size_count", {"model": "linear"})
    rows = registry.get_sample_value("sedna_inference_batch_size_sum", {"model": "linear"})
    assert rows == len(xs)
    assert batches is not None
    assert 1 <= batches <= len(xs)


def _typed(count: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="linear")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 4])
    tensor.contents.fp32_contents.extend([0.0] * count)
    return request


GOOD = np.zeros((2, 4), dtype=np.float32)

INVALID_CASES = {
    "unknown name": (raw_request(GOOD, name="z"), ["'z'", "'x'"]),
    "wrong datatype": (
        raw_request(GOOD.astype(np.float64), datatype="FP64"),
        ["'x'", "FP64", "expected FP32"],
    ),
    "wrong rank": (raw_request(np.zeros((8,), np.float32)), ["'x'", "[8]", "[-1, 4]"]),
    "wrong dim": (raw_request(np.zeros((2, 5), np.float32)), ["'x'", "[2, 5]", "[-1, 4]"]),
    "unknown datatype": (raw_request(GOOD, datatype="BF17"), ["'x'", "BF17"]),
    "typed count": (_typed(7), ["'x'", "7 elements", "expected 8"]),
}


def _short_raw() -> pb.ModelInferRequest:
    request = raw_request(GOOD)
    request.raw_input_contents[0] = request.raw_input_contents[0][:-2]
    return request


def _missing() -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name="linear")


INVALID_CASES["raw byte count"] = (_short_raw(), ["'x'", "30 bytes", "expected 32"])
INVALID_CASES["missing input"] = (_missing(), ["missing input 'x'", "FP32 [-1, 4]"])


@pytest.mark.parametrize("case", sorted(INVALID_CASES))
async def test_invalid_argument_names_the_input(served: Served, case: str) -> None:
    request, needles = INVALID_CASES[case]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    for needle in needles:
        assert needle in details, (needle, details)
    await counted(served.server.registry, {"model": "linear", "status": "invalid_argument"}, 1)


async def test_unknown_requested_output_is_invalid(served: Served) -> None:
    request = raw_request(GOOD)
    request.outputs.add(name="nope")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'nope'" in (caught.value.details() or "")


async def test_unknown_model_or_version_is_not_found(served: Served) -> None:
    stub = served.stub
    calls = [
        stub.ModelInfer(raw_request(GOOD, model="other")),
        stub.ModelReady(pb.ModelReadyRequest(name="other")),
        stub.ModelMetadata(pb.ModelMetadataRequest(name="other")),
        stub.ModelMetadata(pb.ModelMetadataRequest(name="linear", version="9")),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert "other" in (caught.value.details() or "") or "'9'" in (caught.value.details() or "")


async def test_sdk_client_calls_the_served_model(served: Served, linear_expected: Expected) -> None:
    port = served.server.port
    x = np.arange(4, dtype=np.float32) / 3

    def call() -> tuple[Any, Any]:
        with InferenceClient("127.0.0.1", port, "linear", timeout=10) as client:
            single = client.infer(x)  # rank 1: sent as [1, 4], answered as [3]
            batch = client.infer(np.stack([x, 2 * x]).astype(np.float64))  # cast to FP32
            with pytest.raises(CloudInferenceError, match="'x'"):
                client.infer(np.zeros(5))
            return single, batch

    single, batch = await asyncio.to_thread(call)
    assert single.shape == (3,)
    np.testing.assert_allclose(single, linear_expected(x[None])[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch, linear_expected(np.stack([x, 2 * x])), rtol=1e-5, atol=1e-6)
