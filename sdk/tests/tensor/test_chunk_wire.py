"""Hand-written chunk messages: byte for byte protobuf's, read back without copies."""

from __future__ import annotations

import numpy as np
import pytest

from sedna.api.aggregator.v1 import aggregation_service_pb2 as apb
from sedna.api.common.v1.tensor_pb2 import TensorFrame
from sedna.tensor.chunk_wire import (
    RawChunk,
    decode_chunk,
    deserializer,
    encode_chunk,
    serializer,
)

CASES = [
    (0, 0, b""),
    (0, 0, b"x"),
    (1, 0, b"abc"),
    (0, 4096, b"\x00" * 300),
    (127, 128, bytes(range(256))),
    (2**32 - 1, 2**64 - 1, b"edge"),
    (300, 16_384, np.arange(50_000, dtype=np.float32).tobytes()),
]


def _reference(index: int, offset: int, data: bytes) -> apb.PushUpdateRequest:
    message = apb.PushUpdateRequest()
    chunk = message.frame.chunk
    chunk.tensor_index = index
    chunk.offset = offset
    chunk.data = data
    return message


@pytest.mark.parametrize(("index", "offset", "data"), CASES)
def test_encoding_is_protobufs_serialization(index: int, offset: int, data: bytes) -> None:
    encoded = encode_chunk(index, offset, data)
    assert encoded == _reference(index, offset, data).SerializeToString()
    # Both stream message types carry the frame in field 2.
    pulled = apb.PullGlobalWeightsResponse()
    pulled.frame.chunk.CopyFrom(_reference(index, offset, data).frame.chunk)
    assert encoded == pulled.SerializeToString()


@pytest.mark.parametrize(("index", "offset", "data"), CASES)
def test_decoding_gives_the_fields_and_a_view_of_the_message(
    index: int, offset: int, data: bytes
) -> None:
    raw = _reference(index, offset, data).SerializeToString()
    chunk = decode_chunk(raw)
    assert chunk is not None
    assert (chunk.tensor_index, chunk.offset, bytes(chunk.data)) == (index, offset, data)
    if data:
        assert chunk.data.obj is raw  # a view: no copy


def test_an_array_view_is_copied_once_into_the_message() -> None:
    array = np.arange(1000, dtype=np.float32)
    view = array.reshape(-1).view(np.uint8).data[400:1200]
    encoded = encode_chunk(5, 400, view)
    parsed = apb.PullGlobalWeightsResponse.FromString(encoded)
    assert parsed.frame.chunk.tensor_index == 5
    assert parsed.frame.chunk.offset == 400
    assert parsed.frame.chunk.data == array.tobytes()[400:1200]


def test_a_frame_at_another_field_number() -> None:
    frame = TensorFrame()
    frame.chunk.tensor_index = 3
    frame.chunk.data = b"abc"
    wrapped = encode_chunk(3, 0, b"abc", frame_field=7)
    assert wrapped[0] == (7 << 3) | 2
    assert decode_chunk(wrapped, frame_field=7) == RawChunk(3, 0, memoryview(b"abc"))
    assert decode_chunk(wrapped) is None


@pytest.mark.parametrize(
    "message",
    [
        apb.PushUpdateRequest(header=apb.UpdateHeader(session_id="s", client_id="c", round=1)),
        apb.PushUpdateRequest(),
        apb.PushUpdateRequest(frame=TensorFrame()),
    ],
    ids=["header", "empty", "empty-frame"],
)
def test_other_messages_are_left_to_protobuf(message: apb.PushUpdateRequest) -> None:
    assert decode_chunk(message.SerializeToString()) is None


def test_a_manifest_frame_is_left_to_protobuf() -> None:
    message = apb.PushUpdateRequest()
    message.frame.manifest.total_bytes = 12
    message.frame.manifest.chunk_size = 4
    assert decode_chunk(message.SerializeToString()) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"\x12",  # cut after the tag
        b"\x12\x05\x12\x03\x18",  # lengths past the end
        b"\x12\x80",  # cut varint
        b"\x12\x02\x12\x00\x00",  # trailing byte after the frame
        b"\x12\x04\x12\x02\x20\x01",  # unknown chunk field 4
        b"\x12\x06\x12\x04\x08\x01\x08\x02",  # tensor_index twice
        b"\x12\x0c\x12\x0a\x08\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # index > uint32
        b"\x12" + b"\xff" * 11,  # varint longer than 10 bytes
    ],
)
def test_anything_unusual_is_left_to_protobuf(raw: bytes) -> None:
    assert decode_chunk(raw) is None


def test_fields_in_another_order_are_read() -> None:
    # Another implementation may write data before the scalars: still the same chunk.
    chunk = b"\x1a\x02hi" + b"\x10\x80\x01" + b"\x08\x07"
    frame = b"\x12" + bytes((len(chunk),)) + chunk
    raw = b"\x12" + bytes((len(frame),)) + frame
    parsed = apb.PushUpdateRequest.FromString(raw).frame.chunk
    decoded = decode_chunk(raw)
    assert decoded is not None
    assert (decoded.tensor_index, decoded.offset, bytes(decoded.data)) == (
        parsed.tensor_index,
        parsed.offset,
        parsed.data,
    )


def test_range_checks() -> None:
    with pytest.raises(ValueError, match="tensor_index"):
        encode_chunk(2**32, 0, b"")
    with pytest.raises(ValueError, match="offset"):
        encode_chunk(0, -1, b"")


def test_serializer_and_deserializer_pair() -> None:
    header = apb.PushUpdateRequest(header=apb.UpdateHeader(session_id="s", client_id="c"))
    decode = deserializer(apb.PushUpdateRequest)
    assert decode(serializer(header)) == header
    chunk = decode(serializer(encode_chunk(1, 8, b"payload")))
    assert isinstance(chunk, RawChunk)
    assert (chunk.tensor_index, chunk.offset, bytes(chunk.data)) == (1, 8, b"payload")
