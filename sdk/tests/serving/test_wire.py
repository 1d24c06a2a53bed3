"""The ModelInfer fast path: RequestEncoder's bytes and parse_infer_request's views.

Both must agree with protobuf: what RequestEncoder writes parses into the same message as
encode_request builds, and parse_infer_request reads any message as protobuf does.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from google.protobuf.message import DecodeError

from sedna.api.oip.v2 import grpc_service_pb2 as pb
from sedna.serving import convert

Inputs = dict[str, npt.NDArray[np.generic]]

CASES: list[Inputs] = [
    {"x": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)},
    {"a": np.arange(6, dtype=">i4").reshape(2, 3), "b": np.ones(3, np.float64)},  # big-endian
    {"s": np.array(["a", "bc"], dtype=object), "n": np.zeros((0, 3), np.float32)},
    {"f": np.asfortranarray(np.arange(12.0).reshape(3, 4)), "u": np.ones(5, np.int16)},
    {"big": np.zeros(3_000_000, np.uint8), "h": np.ones(7, np.float16)},
]


@pytest.mark.parametrize("inputs", CASES)
def test_request_encoder_writes_what_encode_request_builds(inputs: Inputs) -> None:
    wire = convert.RequestEncoder("joint-inference-model", "2").encode(inputs)
    expected = convert.encode_request("joint-inference-model", inputs, model_version="2")
    assert pb.ModelInferRequest.FromString(wire) == expected


@pytest.mark.parametrize("inputs", CASES)
def test_parse_infer_request_decodes_as_protobuf_does(inputs: Inputs) -> None:
    for wire in (
        convert.RequestEncoder("m").encode(inputs),
        convert.encode_request("m", inputs, request_id="r-1").SerializeToString(),
    ):
        request = convert.parse_infer_request(wire)
        reference = pb.ModelInferRequest.FromString(wire)
        assert request.message.model_name == reference.model_name
        assert request.message.id == reference.id
        assert len(request.message.raw_input_contents) == 0
        assert [bytes(raw) for raw in request.raw] == list(reference.raw_input_contents)
        ours, theirs = convert.decode_inputs(request), convert.decode_inputs(reference)
        assert [(t.name, t.datatype, t.shape) for t in ours] == [
            (t.name, t.datatype, t.shape) for t in theirs
        ]
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a.data, b.data)
            assert a.data.flags.aligned


def test_encoded_tensors_arrive_as_aligned_views_without_a_copy() -> None:
    x = np.random.default_rng(1).standard_normal((2, 3, 5)).astype(np.float32)
    y = np.arange(3, dtype=np.float64)
    wire = convert.RequestEncoder("some-model-name").encode({"x": x, "y": y})
    decoded = convert.decode_inputs(convert.parse_infer_request(wire))
    for tensor, original in zip(decoded, (x, y), strict=True):
        np.testing.assert_array_equal(tensor.data, original)
        assert not tensor.data.flags.owndata  # a view of the message
        assert tensor.data.flags.aligned
        assert not tensor.data.flags.writeable


def test_a_request_id_set_after_the_padding_wins() -> None:
    inputs = {"x": np.ones((1, 5), np.float32)}
    wire = convert.RequestEncoder("m").encode(inputs)
    request = pb.ModelInferRequest.FromString(wire + b"\x1a\x02id")
    assert request.id == "id"
    assert convert.parse_infer_request(wire + b"\x1a\x02id").message.id == "id"


def test_a_message_without_raw_contents_parses_as_usual() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[2]).contents.fp32_contents.extend(
        [1.0, 2.0]
    )
    parsed = convert.parse_infer_request(request.SerializeToString())
    assert parsed.raw == []
    (tensor,) = convert.decode_inputs(parsed)
    np.testing.assert_array_equal(tensor.data, np.array([1.0, 2.0], np.float32))


@pytest.mark.parametrize("wire", [b"\x3a\x05ab", b"\x0a\xff", b"\x3a", b"\x3a\x80"])
def test_a_malformed_message_fails_as_protobuf_fails(wire: bytes) -> None:
    with pytest.raises(DecodeError):
        pb.ModelInferRequest.FromString(wire)
    with pytest.raises(DecodeError):
        convert.parse_infer_request(wire)
