"""The chunked stream: every protocol violation is refused with a message that says what broke."""

from __future__ import annotations

import sys
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import numpy as np
import pytest

from sedna.api.common.v1.tensor_pb2 import DataType, TensorFrame
from sedna.tensor import (
    MAX_CHUNK_SIZE,
    TensorAssembler,
    TensorError,
    TensorStreamError,
    aiter_frames,
    assemble,
    assemble_sync,
    iter_frames,
)
from sedna.tensor import dtypes as dtypes_module

# The stream most tests tamper with: "a" is 16 bytes in four chunks, "b" 6 bytes in two.
A = np.arange(4, dtype=np.float32)
B = np.arange(6, dtype=np.uint8)
CHUNK = 4


def stream() -> list[TensorFrame]:
    """Frames as a peer receives them: M, a@0, a@4, a@8, a@12, b@0, b@4."""
    tensors: dict[str, np.ndarray[Any, Any]] = {"a": A, "b": B}
    frames = iter_frames(tensors, chunk_size=CHUNK)
    return [TensorFrame.FromString(frame.SerializeToString()) for frame in frames]


def chunk(index: int, offset: int, data: bytes) -> TensorFrame:
    frame = TensorFrame()
    frame.chunk.tensor_index = index
    frame.chunk.offset = offset
    frame.chunk.data = data
    return frame


def fed(frames: Iterable[TensorFrame], **limits: int) -> TensorAssembler:
    assembler = TensorAssembler(**limits)
    for frame in frames:
        assembler.feed(frame)
    return assembler


def refused(assembler: TensorAssembler, frame: TensorFrame, match: str) -> TensorStreamError:
    with pytest.raises(TensorStreamError, match=match) as info:
        assembler.feed(frame)
    return info.value


@pytest.fixture
def without_ml_dtypes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    dtypes_module._bfloat16.cache_clear()
    yield
    dtypes_module._bfloat16.cache_clear()


def test_the_reference_stream_is_accepted() -> None:
    frames = stream()
    assert [f.WhichOneof("frame") for f in frames] == ["manifest"] + ["chunk"] * 6
    assembler = fed(frames)
    assert assembler.complete
    assert assembler.total_bytes == 22
    assert assembler.manifest is not None
    first = assembler.result()
    assert first[0][1] is assembler.result()[0][1]  # the receive buffers, not copies
    np.testing.assert_array_equal(assembler.as_dict()["a"], A)
    np.testing.assert_array_equal(assembler.as_dict()["b"], B)


def test_error_hierarchy() -> None:
    assert issubclass(TensorStreamError, TensorError)
    assert issubclass(TensorStreamError, ValueError)


# ---------------------------------------------------------------------------------------------
# Order


def test_chunk_before_manifest() -> None:
    refused(TensorAssembler(), stream()[1], "chunk before the manifest")


def test_second_manifest() -> None:
    frames = stream()
    refused(fed(frames[:2]), frames[0], "second manifest: a stream carries exactly one")


def test_tensor_index_out_of_range() -> None:
    refused(
        fed(stream()[:1]),
        chunk(5, 0, b"1234"),
        "chunk tensor_index 5 is out of range: the manifest lists 2 tensors",
    )


def test_chunk_for_a_later_tensor() -> None:
    frames = stream()
    refused(
        fed(frames[:2]),
        frames[5],
        r"chunk for tensor #1 'b' \(not started\) while tensor #0 'a' is incomplete at byte 4 "
        r"of 16: chunks must follow manifest order",
    )


def test_chunk_for_a_completed_tensor() -> None:
    frames = stream()
    refused(
        fed(frames[:5]),
        frames[4],
        r"chunk for tensor #0 'a' \(already complete\) while tensor #1 'b' is incomplete at "
        r"byte 0 of 6",
    )


def test_offset_gap() -> None:
    frames = stream()
    refused(
        fed(frames[:2]),
        frames[3],
        r"tensor #0 'a': gap of 4 bytes: chunk at offset 8, but bytes \[0, 4\) arrived",
    )


def test_duplicate_chunk() -> None:
    frames = stream()
    refused(
        fed(frames[:3]), frames[2], r"tensor #0 'a': duplicate or overlapping chunk: .*offset 4"
    )


def test_overlapping_chunk() -> None:
    frames = stream()
    refused(
        fed(frames[:2]),
        chunk(0, 2, A.tobytes()[2:6]),
        r"duplicate or overlapping chunk: chunk at offset 2, .*next one expected is 4",
    )


def test_frame_after_completion() -> None:
    frames = stream()
    refused(
        fed(frames),
        frames[6],
        r"frame after the stream completed \(all 22 bytes of 2 tensors already received\)",
    )


def test_manifest_after_completion() -> None:
    frames = stream()
    refused(fed(frames), frames[0], "second manifest")


def test_empty_frame() -> None:
    refused(TensorAssembler(), TensorFrame(), "frame carries neither a manifest nor a chunk")


# ---------------------------------------------------------------------------------------------
# Sizes


def test_chunk_larger_than_chunk_size() -> None:
    refused(
        fed(stream()[:1]),
        chunk(0, 0, A.tobytes()[:8]),
        r"tensor #0 'a': chunk of 8 bytes at offset 0 is larger than the manifest's chunk_size 4",
    )


def test_data_past_the_tensor_end() -> None:
    frames = stream()
    refused(
        fed(frames[:6]),
        chunk(1, 4, b"\4\5\6\7"),
        r"tensor #1 'b': data past the tensor's end: chunk covers bytes \[4, 8\) of a 6-byte "
        r"tensor",
    )


def test_short_chunk_before_the_end() -> None:
    refused(
        fed(stream()[:1]),
        chunk(0, 0, b"\0\0"),
        r"tensor #0 'a': short chunk of 2 bytes at offset 0: only a tensor's last chunk may be "
        r"shorter than chunk_size 4",
    )


def test_empty_chunk() -> None:
    refused(fed(stream()[:1]), chunk(0, 0, b""), "short chunk of 0 bytes at offset 0")


def test_byte_length_disagreeing_with_dtype_and_shape() -> None:
    frames = stream()
    frames[0].manifest.tensors[0].byte_length = 20
    refused(
        TensorAssembler(),
        frames[0],
        r"manifest: tensor #0 'a': byte_length is 20, but DATA_TYPE_FLOAT32 x \(4,\) needs 16",
    )


def test_total_bytes_disagreeing_with_the_sum() -> None:
    frames = stream()
    frames[0].manifest.total_bytes = 23
    refused(
        TensorAssembler(),
        frames[0],
        "manifest: total_bytes is 23, but the tensors' byte_length add up to 22",
    )


def test_total_bytes_above_the_limit() -> None:
    refused(
        TensorAssembler(max_total_bytes=21),
        stream()[0],
        r"manifest: tensors add up to more than max_total_bytes=21 \(reached 22 bytes at "
        r"tensor #1 'b'\)",
    )


def test_limit_is_checked_before_allocating() -> None:
    # A 4 TiB claim must be refused by the limit, not by numpy failing to allocate it.
    frame = TensorFrame()
    spec = frame.manifest.tensors.add(name="huge", dtype=DataType.DATA_TYPE_FLOAT32)
    spec.shape.append(2**40)
    spec.byte_length = 2**42
    frame.manifest.total_bytes = 2**42
    frame.manifest.chunk_size = CHUNK
    refused(TensorAssembler(), frame, "more than max_total_bytes=1073741824")


def test_too_many_tensors() -> None:
    refused(
        TensorAssembler(max_tensors=1),
        stream()[0],
        "manifest lists 2 tensors, more than max_tensors=1",
    )


def test_zero_chunk_size_with_bytes_to_send() -> None:
    frames = stream()
    frames[0].manifest.chunk_size = 0
    refused(TensorAssembler(), frames[0], "manifest: chunk_size is 0 but there are bytes")


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ([-1, 4], r"manifest: tensor #0 'a': negative dimension -1 in shape \(-1, 4\)"),
        ([2**62, 2**62], r"manifest: tensor #0 'a': shape .* overflows"),
    ],
)
def test_bad_shapes_in_the_manifest(shape: list[int], message: str) -> None:
    frames = stream()
    del frames[0].manifest.tensors[0].shape[:]
    frames[0].manifest.tensors[0].shape.extend(shape)
    refused(TensorAssembler(), frames[0], message)


@pytest.mark.parametrize(
    ("value", "message"),
    [(0, "dtype is DATA_TYPE_UNSPECIFIED"), (99, "unknown DataType value 99")],
)
def test_bad_dtype_in_the_manifest(value: int, message: str) -> None:
    frames = stream()
    frames[0].manifest.tensors[1].dtype = value  # type: ignore[assignment]
    wire = TensorFrame.FromString(frames[0].SerializeToString())
    refused(TensorAssembler(), wire, f"manifest: tensor #1 'b': {message}")


def test_bfloat16_in_the_manifest_without_ml_dtypes(without_ml_dtypes: None) -> None:
    frames = stream()
    frames[0].manifest.tensors[0].dtype = DataType.DATA_TYPE_BFLOAT16
    frames[0].manifest.tensors[0].byte_length = 8
    frames[0].manifest.total_bytes = 14
    refused(TensorAssembler(), frames[0], "tensor #0 'a': DATA_TYPE_BFLOAT16 needs .*ml_dtypes")


# ---------------------------------------------------------------------------------------------
# Content


def test_crc_mismatch_in_the_manifest() -> None:
    frames = stream()
    good = frames[0].manifest.tensors[1].crc32
    frames[0].manifest.tensors[1].crc32 = good ^ 1
    assembler = fed(frames[:6])
    refused(
        assembler,
        frames[6],
        rf"tensor #1 'b': CRC-32 mismatch: the manifest says {good ^ 1:#010x}, the 6 bytes "
        rf"received hash to {good:#010x}",
    )


def test_corrupted_chunk_fails_the_crc() -> None:
    frames = stream()
    assembler = fed(frames[:4])
    refused(assembler, chunk(0, 12, b"\0\0\0\0"), "tensor #0 'a': CRC-32 mismatch")


def test_zero_size_tensor_with_a_crc_is_refused() -> None:
    frames = iter_frames({"empty": np.zeros(0, np.float32)})
    manifest = next(frames)
    manifest.manifest.tensors[0].crc32 = 5
    refused(TensorAssembler(), manifest, "tensor #0 'empty': CRC-32 mismatch")


def test_bool_bytes_other_than_0_and_1() -> None:
    frame = TensorFrame()
    spec = frame.manifest.tensors.add(name="mask", dtype=DataType.DATA_TYPE_BOOL, byte_length=2)
    spec.shape.append(2)
    spec.crc32 = zlib.crc32(b"\1\2")
    frame.manifest.total_bytes = 2
    frame.manifest.chunk_size = 2
    refused(fed([frame]), chunk(0, 0, b"\1\2"), "tensor #0 'mask': bool tensor holds bytes")


# ---------------------------------------------------------------------------------------------
# Truncation and failure


def test_result_before_the_manifest() -> None:
    with pytest.raises(TensorStreamError, match="truncated stream: no manifest received"):
        TensorAssembler().result()


def test_result_with_bytes_missing() -> None:
    assembler = fed(stream()[:6])
    assert not assembler.complete
    assert assembler.bytes_received == 20
    with pytest.raises(
        TensorStreamError,
        match=r"truncated stream: tensor #1 'b' is missing 2 of its 6 bytes; 2 of 22 bytes "
        r"missing in all \(1 of 2 tensors incomplete\)",
    ):
        assembler.result()


def test_result_after_the_manifest_only() -> None:
    with pytest.raises(
        TensorStreamError,
        match=r"tensor #0 'a' is missing 16 of its 16 bytes; 22 of 22 bytes missing in all "
        r"\(2 of 2 tensors incomplete\)",
    ):
        fed(stream()[:1]).result()


def test_a_failed_assembler_stays_failed() -> None:
    frames = stream()
    assembler = fed(frames[:2])
    refused(assembler, frames[3], "gap of 4 bytes")
    assert not assembler.complete
    refused(assembler, frames[2], "stream already rejected: tensor #0 'a': gap of 4 bytes")
    with pytest.raises(TensorStreamError, match="stream already rejected"):
        assembler.result()


def test_as_dict_refuses_duplicate_names() -> None:
    assembler = fed(iter_frames([("x", np.zeros(1)), ("y", np.ones(1)), ("x", np.ones(1))]))
    assert [name for name, _ in assembler.result()] == ["x", "y", "x"]
    with pytest.raises(TensorError, match=r"duplicate tensor name 'x'.*use result"):
        assembler.as_dict()


def test_assembler_limits_must_be_non_negative() -> None:
    with pytest.raises(ValueError, match="max_total_bytes"):
        TensorAssembler(max_total_bytes=-1)
    with pytest.raises(ValueError, match="max_tensors"):
        TensorAssembler(max_tensors=-1)


def test_assemble_sync_refuses_truncated_and_overlong_streams() -> None:
    frames = stream()
    with pytest.raises(TensorStreamError, match="truncated stream"):
        assemble_sync(frames[:-1])
    with pytest.raises(TensorStreamError, match="frame after the stream completed"):
        assemble_sync([*frames, frames[-1]])
    with pytest.raises(TensorStreamError, match="max_tensors=1"):
        assemble_sync(frames, max_tensors=1)


async def _aiter(frames: Iterable[TensorFrame]) -> AsyncIterator[TensorFrame]:
    for frame in frames:
        yield frame


async def test_assemble_refuses_a_truncated_stream() -> None:
    with pytest.raises(TensorStreamError, match=r"tensor #1 'b' is missing 2 of its 6 bytes"):
        await assemble(_aiter(stream()[:-1]))
    with pytest.raises(TensorStreamError, match="max_total_bytes=10"):
        await assemble(_aiter(stream()), max_total_bytes=10)


# ---------------------------------------------------------------------------------------------
# Sender arguments


@pytest.mark.parametrize(
    ("chunk_size", "message"),
    [
        (0, "chunk_size must be between 1 and"),
        (MAX_CHUNK_SIZE + 1, "chunk_size must be between 1 and"),
        (True, "chunk_size must be an int, got bool"),
        (1.5, "chunk_size must be an int, got float"),
    ],
)
def test_bad_chunk_size(chunk_size: int, message: str) -> None:
    with pytest.raises(TensorError, match=message):
        iter_frames({"a": A}, chunk_size=chunk_size)


def test_sender_errors_surface_at_the_call_not_mid_stream() -> None:
    with pytest.raises(TensorError, match=r"tensor #1 'bad': unsupported numpy dtype"):
        iter_frames([("ok", A), ("bad", np.array(["text"]))])


async def test_async_sender_errors_surface_on_first_iteration() -> None:
    frames = aiter_frames([("bad", np.array([object()]))])
    with pytest.raises(TensorError, match=r"tensor #0 'bad': unsupported numpy dtype"):
        await anext(frames)


# --------------------------------------------------------------------------- into


def _assemble_into(tensors: dict[str, np.ndarray], into: list[np.ndarray]) -> list[np.ndarray]:
    assembler = TensorAssembler(into=into)
    for frame in iter_frames(tensors, chunk_size=64):
        assembler.feed(frame)
    return [array for _name, array in assembler.result()]


def test_the_assembler_writes_into_matching_arrays() -> None:
    tensors = {"a": np.arange(40, dtype=np.float32).reshape(5, 8), "b": np.ones(3)}
    into = [np.zeros((5, 8), np.float32), np.zeros(3)]
    got = _assemble_into(tensors, into)
    assert got[0] is into[0]
    assert got[1] is into[1]
    np.testing.assert_array_equal(into[0], tensors["a"])
    np.testing.assert_array_equal(into[1], tensors["b"])


@pytest.mark.parametrize(
    "unusable",
    [
        np.zeros((8, 5), np.float32),  # another shape
        np.zeros((5, 8), np.float64),  # another dtype
        np.zeros((5, 8), np.dtype(">f4")),  # another byte order
        np.zeros((8, 5), np.float32).T,  # not C-contiguous
        np.frombuffer(bytes(160), np.float32).reshape(5, 8),  # read-only
    ],
    ids=["shape", "dtype", "byte-order", "fortran", "read-only"],
)
def test_an_array_that_cannot_take_the_tensor_is_left_alone(unusable: np.ndarray) -> None:
    tensors = {"a": np.arange(40, dtype=np.float32).reshape(5, 8)}
    before = unusable.copy()
    got = _assemble_into(tensors, [unusable])
    assert got[0] is not unusable
    np.testing.assert_array_equal(got[0], tensors["a"])
    np.testing.assert_array_equal(unusable, before)


def test_arrays_sharing_memory_are_not_both_written() -> None:
    # Two tensors written into one buffer would corrupt each other: the second gets its own.
    tensors = {"a": np.full(8, 1.0, np.float32), "b": np.full(8, 2.0, np.float32)}
    shared = np.zeros(12, np.float32)
    into = [shared[:8], shared[4:]]
    got = _assemble_into(tensors, into)
    assert sum(array.base is shared for array in got) == 1
    np.testing.assert_array_equal(got[0], tensors["a"])
    np.testing.assert_array_equal(got[1], tensors["b"])
    same = np.zeros(8, np.float32)
    got = _assemble_into(tensors, [same, same])  # the same array twice
    assert (got[0] is same) != (got[1] is same)
    np.testing.assert_array_equal(got[0], tensors["a"])
    np.testing.assert_array_equal(got[1], tensors["b"])


def test_fewer_arrays_than_tensors_cover_the_first_ones() -> None:
    tensors = {"a": np.ones(4, np.float32), "b": np.zeros(2, np.float32)}
    into = [np.empty(4, np.float32)]
    got = _assemble_into(tensors, into)
    assert got[0] is into[0]
    np.testing.assert_array_equal(got[1], tensors["b"])
