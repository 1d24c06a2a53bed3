"""Hand-written chunk messages: protobuf's wire format (byte for byte without padding), data
16-byte aligned in the message, read back without copies."""

from __future__ import annotations

import numpy as np
import pytest

from sedna.api.aggregator.v1 import aggregation_service_pb2 as apb
from sedna.api.common.v1.tensor_pb2 import TensorFrame
from sedna.tensor.chunk_wire import (
    DATA_ALIGNMENT,
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
def test_unpadded_encoding_is_protobufs_serialization(index: int, offset: int, data: bytes) -> None:
    encoded = encode_chunk(index, offset, data, align=1)
    assert encoded == _reference(index, offset, data).SerializeToString()
    # Both stream message types carry the frame in field 2.
    pulled = apb.PullGlobalWeightsResponse()
    pulled.frame.chunk.CopyFrom(_reference(index, offset, data).frame.chunk)
    assert encoded == pulled.SerializeToString()


@pytest.mark.parametrize(("index", "offset", "data"), CASES)
def test_padded_encoding_parses_as_the_same_chunk(index: int, offset: int, data: bytes) -> None:
    encoded = encode_chunk(index, offset, data)
    parsed = apb.PushUpdateRequest.FromString(encoded)
    assert parsed.frame.chunk.tensor_index == index
    assert parsed.frame.chunk.offset == offset
    assert parsed.frame.chunk.data == data
    assert set(parsed.frame.chunk.padding) <= {0}  # zeros, if any
    if data:
        # The data ends the message and starts on a 16-byte boundary of it.
        assert encoded.endswith(data)
        assert (len(encoded) - len(data)) % DATA_ALIGNMENT == 0


@pytest.mark.parametrize("size", [1, 100, 127, 128, 16_383, 16_384, 1 << 20, (4 << 20) + 3])
@pytest.mark.parametrize("align", [1, 4, 16, 64, 4096])
@pytest.mark.parametrize(("index", "offset"), [(0, 0), (5, 4096), (2**32 - 1, 2**40)])
def test_data_lands_on_the_boundary_whatever_the_lengths(
    size: int, align: int, index: int, offset: int
) -> None:
    # Varint lengths grow at 128, 16,384, ...: the padding must settle on every side of them.
    encoded = encode_chunk(index, offset, bytes(size), align=align)
    assert (len(encoded) - size) % align == 0
    chunk = decode_chunk(encoded)
    assert chunk is not None
    assert (chunk.tensor_index, chunk.offset, len(chunk.data)) == (index, offset, size)


def test_a_received_chunk_is_an_aligned_array() -> None:
    # A bytes object's contents are 16-byte aligned: so is the data of a padded message.
    values = np.arange(1000, dtype=np.float32)
    chunk = decode_chunk(bytes(encode_chunk(3, 40, values.data)))
    assert chunk is not None
    array = np.frombuffer(chunk.data, dtype=np.float32)
    assert array.flags.aligned
    assert array.ctypes.data % DATA_ALIGNMENT == 0
    np.testing.assert_array_equal(array, values)


@pytest.mark.parametrize("align", [0, -1, 4097])
def test_align_out_of_range_is_refused(align: int) -> None:
    with pytest.raises(ValueError, match="align"):
        encode_chunk(0, 0, b"x", align=align)


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
        b"\x12\x04\x12\x02\x28\x01",  # unknown chunk field 5
        b"\x12\x05\x12\x03\x22\x05\x00",  # padding longer than the message
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


def test_padding_before_the_data_is_skipped() -> None:
    # Another implementation may pad anywhere, any length: the chunk reads the same.
    chunk = b"\x08\x02" + b"\x22\x03\x00\x00\x00" + b"\x1a\x02hi" + b"\x22\x00"
    frame = b"\x12" + bytes((len(chunk),)) + chunk
    raw = b"\x12" + bytes((len(frame),)) + frame
    decoded = decode_chunk(raw)
    assert decoded is not None
    assert (decoded.tensor_index, decoded.offset, bytes(decoded.data)) == (2, 0, b"hi")
