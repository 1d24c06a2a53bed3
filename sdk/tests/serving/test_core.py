"""The serving core without a network: conversion, estimator results, models and stores."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from sedna.api.oip.v2 import grpc_service_pb2 as pb
from sedna.serving import (
    BackendError,
    InferenceMetrics,
    InputTensor,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    ServedModel,
    StaticModelStore,
    TensorSpec,
)
from sedna.serving.convert import (
    JSON_CONTENT_TYPE,
    decode_inputs,
    decode_outputs,
    encode_request,
    encode_response,
    metadata_from_proto,
    metadata_to_proto,
)
from sedna.serving.estimator import EstimatorBackend, encode_result, input_spec, result_array
from sedna.serving.model import OutputTensor


def _metrics() -> InferenceMetrics:
    return InferenceMetrics(CollectorRegistry())


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([[1, -2]], dtype=np.int64),
        np.array([True, False]),
        np.array([1.5], dtype=np.float16),
        np.array([b"ab", b""], dtype=np.object_),
        np.array(["x", "yz"]),
    ],
)
def test_request_round_trip(array: np.ndarray[Any, Any]) -> None:
    request = encode_request("m", {"x": array}, request_id="7")
    assert request.id == "7"
    [decoded] = decode_inputs(request)
    assert decoded.name == "x"
    assert decoded.shape == array.shape
    if array.dtype.kind in "OU":
        assert decoded.datatype == "BYTES"
        expected = [v.encode() if isinstance(v, str) else v for v in array.reshape(-1).tolist()]
        assert decoded.data.reshape(-1).tolist() == expected
    else:
        np.testing.assert_array_equal(decoded.data, array)
        assert decoded.data.dtype == array.dtype


def test_encode_request_rejects_what_oip_cannot_carry() -> None:
    with pytest.raises(TypeError, match="complex"):
        encode_request("m", {"x": np.array([1j])})
    with pytest.raises(TypeError, match="str or bytes"):
        encode_request("m", {"x": np.array([{"a": 1}], dtype=np.object_)})


def test_response_round_trip_keeps_content_type() -> None:
    outputs = [
        OutputTensor(TensorSpec("y", "FP32", (-1, 2)), np.ones((1, 2), np.float32)),
        encode_result(OutputTensor(TensorSpec("r", "BYTES", ()), result_array({"k": [1, 2]}))),
    ]
    response = encode_response(pb.ModelInferRequest(model_name="m", id="i"), "1", outputs)
    decoded = decode_outputs(response)
    assert [o.spec for o in decoded] == [
        TensorSpec("y", "FP32", (1, 2)),
        TensorSpec("r", "BYTES", (1,)),
    ]
    np.testing.assert_array_equal(decoded[0].data, np.ones((1, 2)))
    assert decoded[0].content_type is None
    assert decoded[1].content_type == JSON_CONTENT_TYPE
    assert json.loads(decoded[1].data[0]) == {"k": [1, 2]}


def test_decode_outputs_reads_typed_contents() -> None:
    response = pb.ModelInferResponse(model_name="m")
    tensor = response.outputs.add(name="y", datatype="INT32", shape=[2])
    tensor.contents.int_contents.extend([3, -4])
    [output] = decode_outputs(response)
    np.testing.assert_array_equal(output.data, np.array([3, -4], np.int32))


def test_decode_outputs_rejects_malformed_responses() -> None:
    response = pb.ModelInferResponse(model_name="m")
    response.outputs.add(name="y", datatype="FP32", shape=[2])
    response.raw_output_contents.append(b"\x00" * 7)
    with pytest.raises(InvalidInputError, match=r"output 'y'.*7 bytes"):
        decode_outputs(response)


def test_metadata_round_trip() -> None:
    model = ServedModel("m", EstimatorBackend(lambda x: x, input_spec("-1,4", "INT8")), _metrics())
    meta = metadata_from_proto(metadata_to_proto(model.metadata))
    assert meta == model.metadata
    assert meta.inputs == (TensorSpec("data", "INT8", (-1, 4)),)
    assert meta.platform == "sedna_estimator"


@pytest.mark.parametrize(
    ("shape", "datatype", "expected"),
    [
        (None, None, None),
        ("", "", None),
        ("-1,64", None, TensorSpec("data", "FP32", (-1, 64))),
        ("[-1, 3, 224, 224]", "uint8", TensorSpec("data", "UINT8", (-1, 3, 224, 224))),
    ],
)
def test_input_spec(shape: str | None, datatype: str | None, expected: TensorSpec | None) -> None:
    assert input_spec(shape, datatype) == expected


@pytest.mark.parametrize(
    ("shape", "datatype", "match"),
    [
        ("", "FP32", "needs an input shape"),
        ("a", None, "integers"),
        ("-1,0", None, "positive"),
        ("-1", "BF16", "unknown input datatype"),
    ],
)
def test_input_spec_errors(shape: str, datatype: str | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        input_spec(shape, datatype)


def test_result_array_follows_the_result_convention() -> None:
    assert result_array([1, 2]).dtype == np.int64
    assert result_array(np.float32(0.5)).dtype == np.float32
    assert result_array([True]).dtype == np.bool_
    for value in ({"a": 1}, "cat", [[1], [2, 3]], None, ["a", "b"]):
        held = result_array(value)
        assert held.dtype == np.object_
        assert held.shape == ()
        assert held[()] is value
    per_row = result_array(["a", {"b": 2}], rows=2)
    assert per_row.shape == (2,)
    assert per_row.tolist() == ["a", {"b": 2}]
    with pytest.raises(BackendError, match="one result per row"):
        result_array({"a": 1}, rows=2)


def test_encode_result_json_and_numeric() -> None:
    numeric = OutputTensor(TensorSpec("result", "FP32", (2,)), np.ones(2, np.float32))
    assert encode_result(numeric) is numeric
    held = result_array({"score": np.float32(0.25), "boxes": np.zeros((1, 2)), "tags": {"x"}})
    encoded = encode_result(OutputTensor(TensorSpec("result", "BYTES", ()), held))
    assert encoded.spec == TensorSpec("result", "BYTES", (1,))
    assert encoded.content_type == JSON_CONTENT_TYPE
    assert json.loads(encoded.data[0]) == {
        "score": 0.25,
        "boxes": [[0.0, 0.0]],
        "tags": ["x"],
    }
    with pytest.raises(BackendError, match="JSON"):
        encode_result(OutputTensor(TensorSpec("result", "BYTES", ()), result_array(object())))


async def test_undeclared_model_takes_any_input_and_types_its_outputs() -> None:
    seen: list[Any] = []

    def predict(data: Any) -> Any:
        seen.append(data)
        return data.sum(axis=-1)

    model = ServedModel("m", EstimatorBackend(predict), _metrics(), encode_output=encode_result)
    model.batcher.start()
    x = np.frombuffer(np.arange(4, dtype=np.int16).tobytes(), np.int16).reshape(2, 2)
    assert not x.flags.writeable
    [output] = await model.infer([InputTensor("anything", "INT16", (2, 2), x)])
    assert output.spec == TensorSpec("result", "INT64", (2,))
    np.testing.assert_array_equal(output.data, [1, 5])
    assert seen[0].flags.writeable  # estimators get a writable copy
    with pytest.raises(InvalidInputError, match="at least one input"):
        await model.infer([])
    with pytest.raises(InvalidInputError, match="'nope'"):
        await model.infer([InputTensor("a", "INT16", (2, 2), x)], ["nope"])
    await model.batcher.stop()


def test_estimator_backend_batching_needs_a_batch_dimension() -> None:
    with pytest.raises(ValueError, match="variable first dimension"):
        EstimatorBackend(lambda x: x, input_spec("3,-1", None), batched=True)
    with pytest.raises(ValueError, match="variable first dimension"):
        EstimatorBackend(lambda x: x, None, batched=True)


def test_static_store_readiness() -> None:
    metrics = _metrics()
    store = StaticModelStore(metrics, ("m",))
    assert store.names == ("m",)
    assert store.metrics is metrics
    assert not store.server_ready()
    assert not store.model_ready("m")
    with pytest.raises(ModelNotReadyError, match="loading"):
        store.get("m")
    with pytest.raises(ModelNotFoundError):
        store.model_ready("other")
    model = ServedModel("m", EstimatorBackend(lambda x: x), metrics, version="3")
    store.add(model)
    assert store.server_ready()
    assert store.get("m", "3") is model
    with pytest.raises(ModelNotFoundError, match="no version '1'"):
        store.get("m", "1")
    with pytest.raises(ValueError, match="already"):
        store.add(model)
