"""Property-based round trips through the codec and the chunked stream, over the real wire.

Arrays are generated as random *bytes* viewed as each dtype, so every bit pattern (NaN payloads,
signed zeros, subnormals) must survive unchanged; comparisons are on bytes, not values.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sedna.api.common.v1.tensor_pb2 import Tensor, TensorFrame, TensorSet
from sedna.tensor import (
    TensorAssembler,
    aiter_frames,
    assemble,
    assemble_sync,
    from_numpy_dtype,
    from_proto,
    from_proto_set,
    iter_frames,
    supported_data_types,
    to_numpy_dtype,
    to_proto,
    to_proto_set,
)

WIRE_DTYPES = [to_numpy_dtype(value) for value in supported_data_types()]
LAYOUTS = ["c", "big-endian", "fortran", "strided", "transposed"]

Array = np.ndarray[Any, Any]

ROUND_TRIP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def wire_arrays(draw: st.DrawFn, max_side: int = 4) -> tuple[Array, Array]:
    """Draw ``(sent, expected)``: an array in some layout and its little-endian C-order twin."""
    dtype = draw(st.sampled_from(WIRE_DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=max_side))
    count = int(np.prod(shape, dtype=np.int64))
    raw = draw(st.binary(min_size=count * dtype.itemsize, max_size=count * dtype.itemsize))
    if dtype == np.bool_:
        # Only 0 and 1 are valid bool bytes on the wire.
        raw = bytes(byte & 1 for byte in raw)
    expected = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    layout = draw(st.sampled_from(LAYOUTS))
    sent = expected
    if layout == "big-endian" and dtype.itemsize > 1 and dtype.kind != "V":
        sent = expected.astype(dtype.newbyteorder(">"))
    elif layout == "fortran":
        sent = np.asarray(expected, order="F")  # asfortranarray would make 0-d arrays 1-d
    elif layout == "strided" and expected.ndim:
        sent = np.repeat(expected, 2, axis=0)[::2]
    elif layout == "transposed":
        sent = expected.T
        expected = np.asarray(sent, order="C")
    return sent, expected


def assert_same_tensor(actual: Array, expected: Array) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    assert actual.dtype.str[0] in "<|"
    assert actual.flags.c_contiguous
    assert actual.tobytes() == expected.tobytes()


names = st.text(max_size=12)


# ---------------------------------------------------------------------------------------------
# Single message


@ROUND_TRIP
@given(wire_arrays(), names)
def test_tensor_round_trip(pair: tuple[Array, Array], name: str) -> None:
    sent, expected = pair
    wire = Tensor.FromString(to_proto(sent, name).SerializeToString())
    assert wire.name == name
    assert wire.dtype == from_numpy_dtype(expected.dtype)
    assert tuple(wire.shape) == expected.shape
    decoded = from_proto(wire)
    assert_same_tensor(decoded, expected)
    assert not decoded.flags.writeable
    copied = from_proto(wire, copy=True)
    assert_same_tensor(copied, expected)
    assert copied.flags.writeable


@ROUND_TRIP
@given(st.lists(st.tuples(names, wire_arrays()), max_size=5))
def test_tensor_set_round_trip(items: list[tuple[str, tuple[Array, Array]]]) -> None:
    pairs = [(name, sent) for name, (sent, _) in items]
    wire = TensorSet.FromString(to_proto_set(pairs).SerializeToString())
    decoded = from_proto_set(wire)
    assert [name for name, _ in decoded] == [name for name, _ in items]
    for (_, array), (_, (_, expected)) in zip(decoded, items, strict=True):
        assert_same_tensor(array, expected)


def test_tensor_set_accepts_a_mapping_and_keeps_its_order() -> None:
    weights: dict[str, Array] = {
        "b": np.arange(3, dtype=np.int16),
        "a": np.asarray(np.float32(2.5)),
    }
    decoded = from_proto_set(to_proto_set(weights))
    assert [name for name, _ in decoded] == ["b", "a"]
    assert_same_tensor(decoded[0][1], weights["b"])
    assert_same_tensor(decoded[1][1], weights["a"])


def test_python_values_are_encoded_through_numpy() -> None:
    assert_same_tensor(from_proto(to_proto([[1, 2], [3, 4]])), np.array([[1, 2], [3, 4]]))
    assert_same_tensor(from_proto(to_proto(True)), np.array(True))


# ---------------------------------------------------------------------------------------------
# Chunked stream


def over_the_wire(frames: Iterable[TensorFrame]) -> list[TensorFrame]:
    """What a peer receives: every frame serialized and parsed again."""
    return [TensorFrame.FromString(frame.SerializeToString()) for frame in frames]


chunk_sizes = st.one_of(st.integers(1, 16), st.integers(17, 5000))
tensor_lists = st.lists(st.tuples(names, wire_arrays()), max_size=6)


@ROUND_TRIP
@given(tensor_lists, chunk_sizes)
def test_stream_round_trip(items: list[tuple[str, tuple[Array, Array]]], chunk_size: int) -> None:
    frames = over_the_wire(
        iter_frames([(name, sent) for name, (sent, _) in items], chunk_size=chunk_size)
    )

    manifest = frames[0].manifest
    assert frames[0].WhichOneof("frame") == "manifest"
    assert manifest.chunk_size == chunk_size
    assert manifest.total_bytes == sum(expected.nbytes for _, (_, expected) in items)
    for spec, (name, (_, expected)) in zip(manifest.tensors, items, strict=True):
        assert spec.name == name
        assert tuple(spec.shape) == expected.shape
        assert spec.byte_length == expected.nbytes
        assert spec.crc32 == zlib.crc32(expected.tobytes())

    # Chunks: in manifest order, contiguous, full-size but for each tensor's last, none for
    # zero-size tensors.
    chunks = [frame.chunk for frame in frames[1:]]
    assert all(frame.WhichOneof("frame") == "chunk" for frame in frames[1:])
    expected_layout = [
        (index, offset, min(chunk_size, expected.nbytes - offset))
        for index, (_, (_, expected)) in enumerate(items)
        for offset in range(0, expected.nbytes, chunk_size)
    ]
    assert [(c.tensor_index, c.offset, len(c.data)) for c in chunks] == expected_layout

    assembler = TensorAssembler()
    for frame in frames:
        assert not assembler.complete
        assembler.feed(frame)
    assert assembler.complete
    assert assembler.bytes_received == manifest.total_bytes
    result = assembler.result()
    assert [name for name, _ in result] == [name for name, _ in items]
    for (_, array), (_, (_, expected)) in zip(result, items, strict=True):
        assert_same_tensor(array, expected)
        assert array.flags.writeable


@settings(max_examples=25, deadline=None)
@given(st.lists(wire_arrays(max_side=3), min_size=20, max_size=60), st.integers(1, 64))
def test_many_tensors_in_one_stream(pairs: list[tuple[Array, Array]], chunk_size: int) -> None:
    named = [(f"layer{index}.weight", sent) for index, (sent, _) in enumerate(pairs)]
    result = assemble_sync(over_the_wire(iter_frames(named, chunk_size=chunk_size)))
    assert [name for name, _ in result] == [name for name, _ in named]
    for (_, array), (_, expected) in zip(result, pairs, strict=True):
        assert_same_tensor(array, expected)


def test_chunk_size_larger_than_every_tensor_sends_one_chunk_each() -> None:
    tensors: dict[str, Array] = {
        "a": np.arange(10, dtype=np.float64),
        "b": np.ones((2, 2), np.uint8),
    }
    frames = over_the_wire(iter_frames(tensors, chunk_size=1 << 20))
    assert [len(f.chunk.data) for f in frames[1:]] == [80, 4]
    result = TensorAssembler()
    for frame in frames:
        result.feed(frame)
    assert set(result.as_dict()) == {"a", "b"}


def test_empty_tensor_list_streams_a_lone_manifest() -> None:
    frames = over_the_wire(iter_frames([]))
    assert len(frames) == 1
    assembler = TensorAssembler()
    assert assembler.feed(frames[0]) is True
    assert assembler.result() == []


def test_scalar_and_zero_size_tensors_stream() -> None:
    tensors: dict[str, npt.ArrayLike] = {
        "scalar": np.float32(1.5),
        "empty": np.zeros((3, 0), np.int64),
        "one": np.array([7], dtype=">u2"),
    }
    frames = over_the_wire(iter_frames(tensors, chunk_size=1))
    # Zero-size tensors send no chunk: 4 bytes of the scalar, 2 of "one".
    assert [f.chunk.tensor_index for f in frames[1:]] == [0, 0, 0, 0, 2, 2]
    result = assemble_sync(frames)
    assert_same_tensor(result[0][1], np.array(1.5, np.float32))
    assert_same_tensor(result[1][1], np.zeros((3, 0), np.int64))
    assert_same_tensor(result[2][1], np.array([7], np.uint16))


def test_bfloat16_streams_when_ml_dtypes_is_installed() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    weights = np.linspace(-2, 2, 9, dtype=np.float32).astype(ml_dtypes.bfloat16).reshape(3, 3)
    ((name, array),) = assemble_sync(over_the_wire(iter_frames({"w": weights}, chunk_size=4)))
    assert name == "w"
    assert array.dtype == weights.dtype
    assert array.tobytes() == weights.tobytes()
    assert from_proto(to_proto(weights)).tobytes() == weights.tobytes()


async def _aiter(frames: Iterable[TensorFrame]) -> AsyncIterator[TensorFrame]:
    for frame in frames:
        yield frame


async def test_async_send_and_assemble() -> None:
    tensors: dict[str, Array] = {
        "w": np.arange(1000, dtype=np.float32).reshape(10, 100),
        "b": np.zeros(10),
    }
    sent = [frame async for frame in aiter_frames(tensors, chunk_size=256)]
    assert over_the_wire(sent) == over_the_wire(iter_frames(tensors, chunk_size=256))
    result = await assemble(_aiter(over_the_wire(sent)))
    assert [name for name, _ in result] == ["w", "b"]
    assert_same_tensor(result[0][1], tensors["w"])
    assert_same_tensor(result[1][1], tensors["b"])
