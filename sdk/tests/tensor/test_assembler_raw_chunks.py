"""TensorAssembler fed RawChunks (chunks read from the wire by chunk_wire, without protobuf).

A RawChunk is checked exactly as a chunk frame is: every protocol violation gives the same
error, fails the assembler the same way, and its bytes are copied once, into the array.
"""

from __future__ import annotations

import tracemalloc
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest

from sedna.api.common.v1.tensor_pb2 import TensorFrame
from sedna.tensor import TensorAssembler, TensorStreamError, assemble_sync, iter_frames
from sedna.tensor.chunk_wire import RawChunk, decode_chunk, encode_chunk

# The stream the tests tamper with: "a" is 16 bytes in four chunks, "b" 6 bytes in two.
A = np.arange(4, dtype=np.float32)
B = np.arange(6, dtype=np.uint8)
CHUNK = 4


def stream() -> list[TensorFrame]:
    """Frames as a peer receives them: M, a@0, a@4, a@8, a@12, b@0, b@4."""
    tensors: dict[str, np.ndarray[Any, Any]] = {"a": A, "b": B}
    frames = iter_frames(tensors, chunk_size=CHUNK)
    return [TensorFrame.FromString(frame.SerializeToString()) for frame in frames]


def raw(index: int, offset: int, data: bytes) -> RawChunk:
    """A chunk as the client reads it: decoded from the serialized stream message."""
    chunk = decode_chunk(encode_chunk(index, offset, data))
    assert chunk is not None
    return chunk


def raw_of(frame: TensorFrame) -> RawChunk:
    return raw(frame.chunk.tensor_index, frame.chunk.offset, frame.chunk.data)


def frame_of(index: int, offset: int, data: bytes) -> TensorFrame:
    frame = TensorFrame()
    frame.chunk.tensor_index = index
    frame.chunk.offset = offset
    frame.chunk.data = data
    return frame


def fed(frames: Iterable[TensorFrame]) -> TensorAssembler:
    assembler = TensorAssembler()
    for frame in frames:
        assembler.feed(frame)
    return assembler


# ---------------------------------------------------------------------------------------------
# Reassembly


@pytest.mark.parametrize("method", ["feed", "feed_chunk"])
def test_a_stream_of_raw_chunks_is_reassembled(method: str) -> None:
    manifest, *chunks = stream()
    assembler = TensorAssembler()
    assert assembler.feed(manifest) is False
    done = [getattr(assembler, method)(raw_of(chunk)) for chunk in chunks]

    assert done == [False] * 5 + [True]
    assert assembler.bytes_received == 22
    result = assembler.as_dict()
    np.testing.assert_array_equal(result["a"], A)
    np.testing.assert_array_equal(result["b"], B)
    # The receive buffers: writable, not views of the messages they came in.
    assert result["a"].flags.writeable
    assert result["a"].flags.owndata


def test_raw_chunks_and_chunk_frames_mix() -> None:
    manifest, *chunks = stream()
    assembler = TensorAssembler()
    assembler.feed(manifest)
    for i, chunk in enumerate(chunks):
        if i % 2:
            assembler.feed(chunk)
        else:
            assembler.feed_chunk(raw_of(chunk))
    assert assembler.complete
    np.testing.assert_array_equal(assembler.as_dict()["a"], A)


def test_feed_chunk_takes_a_tensor_chunk_message() -> None:
    manifest, *chunks = stream()
    assembler = TensorAssembler()
    assembler.feed(manifest)
    for chunk in chunks:
        assembler.feed_chunk(chunk.chunk)
    np.testing.assert_array_equal(assembler.as_dict()["b"], B)


def test_assemble_sync_takes_raw_chunks() -> None:
    manifest, *chunks = stream()
    result = dict(assemble_sync([manifest, *(raw_of(chunk) for chunk in chunks)]))
    np.testing.assert_array_equal(result["a"], A)
    np.testing.assert_array_equal(result["b"], B)


def test_a_view_of_typed_memory_counts_bytes() -> None:
    # A RawChunk built over typed memory (not bytes from the wire) is read as its bytes.
    values = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assembler = TensorAssembler()
    frames = iter_frames({"v": values}, chunk_size=values.nbytes)
    assembler.feed(next(frames))
    assembler.feed_chunk(RawChunk(0, 0, values.data))
    np.testing.assert_array_equal(assembler.as_dict()["v"], values)


def test_a_raw_chunk_is_copied_only_into_the_array() -> None:
    payload = np.random.default_rng(3).standard_normal(4 << 20, dtype=np.float32)  # 16 MiB
    manifest, _chunk = iter_frames({"w": payload}, chunk_size=payload.nbytes)
    received = encode_chunk(0, 0, payload.data)
    assembler = TensorAssembler()
    assembler.feed(manifest)  # allocates the array before tracing starts
    decoded = decode_chunk(received)
    assert decoded is not None

    tracemalloc.start()
    try:
        assembler.feed_chunk(decoded)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    np.testing.assert_array_equal(assembler.as_dict()["w"], payload)
    # Reading a TensorChunk's data alone makes a chunk-sized bytes object (16 MiB here).
    assert peak < 1 << 20, f"feeding allocated {peak} bytes"


# ---------------------------------------------------------------------------------------------
# Protocol violations: the same errors as chunk frames


def test_gap() -> None:
    assembler = fed(stream()[:2])
    with pytest.raises(
        TensorStreamError,
        match=r"tensor #0 'a': gap of 4 bytes: chunk at offset 8, but bytes \[0, 4\) arrived",
    ):
        assembler.feed_chunk(raw(0, 8, A.tobytes()[8:12]))


def test_overlap() -> None:
    assembler = fed(stream()[:2])
    with pytest.raises(
        TensorStreamError,
        match=r"duplicate or overlapping chunk: chunk at offset 2, .*next one expected is 4",
    ):
        assembler.feed_chunk(raw(0, 2, A.tobytes()[2:6]))


def test_crc_mismatch() -> None:
    assembler = fed(stream()[:4])
    good = stream()[0].manifest.tensors[0].crc32
    with pytest.raises(TensorStreamError, match=rf"tensor #0 'a': CRC-32 mismatch: .*{good:#010x}"):
        assembler.feed_chunk(raw(0, 12, b"\0\0\0\0"))


def test_tensor_index_out_of_range() -> None:
    assembler = fed(stream()[:1])
    with pytest.raises(
        TensorStreamError, match="chunk tensor_index 5 is out of range: the manifest lists 2"
    ):
        assembler.feed(raw(5, 0, b"1234"))


A_BYTES = A.tobytes()
VIOLATIONS = {
    # name: (frames fed first, the offending chunk as (tensor_index, offset, data))
    "before the manifest": (0, (0, 0, A_BYTES[:4])),
    "index out of range": (1, (5, 0, b"1234")),
    "a later tensor": (2, (1, 0, B.tobytes()[:4])),
    "a completed tensor": (5, (0, 12, A_BYTES[12:])),
    "gap": (2, (0, 8, A_BYTES[8:12])),
    "duplicate": (3, (0, 4, A_BYTES[4:8])),
    "overlap": (2, (0, 2, A_BYTES[2:6])),
    "after completion": (7, (1, 4, B.tobytes()[4:])),
    "larger than chunk_size": (1, (0, 0, A_BYTES[:8])),
    "past the tensor's end": (6, (1, 4, b"1234")),
    "short chunk": (1, (0, 0, A_BYTES[:2])),
    "empty chunk": (1, (0, 0, b"")),
    "corrupted (CRC)": (4, (0, 12, b"\0\0\0\0")),
}


@pytest.mark.parametrize("method", ["feed", "feed_chunk"])
@pytest.mark.parametrize("case", list(VIOLATIONS))
def test_every_violation_is_the_chunk_frames_error(case: str, method: str) -> None:
    prefix, (index, offset, data) = VIOLATIONS[case]
    as_frame = fed(stream()[:prefix])
    with pytest.raises(TensorStreamError) as expected:
        as_frame.feed(frame_of(index, offset, data))

    as_raw = fed(stream()[:prefix])
    with pytest.raises(TensorStreamError) as got:
        getattr(as_raw, method)(raw(index, offset, data))

    assert str(got.value) == str(expected.value)
    # Failed from then on, for chunks as for frames, and the buffers are released.
    assert not as_raw.complete
    with pytest.raises(TensorStreamError, match="stream already rejected: "):
        as_raw.feed_chunk(raw(0, 0, A_BYTES[:4]))
    with pytest.raises(TensorStreamError, match="stream already rejected: "):
        as_raw.result()


def test_bool_bytes_other_than_0_and_1() -> None:
    bad = b"\x01\x02\x01"
    manifest = next(iter_frames({"f": np.array([True, False, True])}, chunk_size=8))
    manifest.manifest.tensors[0].crc32 = zlib.crc32(bad)  # so that the bool check decides
    as_frame = fed([manifest])
    with pytest.raises(TensorStreamError, match="tensor #0 'f'") as expected:
        as_frame.feed(frame_of(0, 0, bad))

    as_raw = fed([manifest])
    with pytest.raises(TensorStreamError) as got:
        as_raw.feed_chunk(raw(0, 0, bad))
    assert str(got.value) == str(expected.value)
