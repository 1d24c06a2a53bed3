"""The safetensors codec: order-keeping writes, checked streaming reads, clear errors."""

from __future__ import annotations

import io
import json
import pickle
import struct
from typing import Any

import numpy as np
import pytest

from sedna.algorithms.transmitter.safetensors_codec import (
    EncodedTensors,
    SafetensorsError,
    SafetensorsReader,
    decode,
    encode,
    named_tensors,
    parse_header,
)

st = pytest.importorskip("safetensors.numpy")


def _tensors() -> list[tuple[str, np.ndarray[Any, Any]]]:
    rng = np.random.default_rng(0)
    return [
        ("layer.10", rng.standard_normal((3, 4)).astype(np.float32)),
        ("layer.2", rng.standard_normal(5)),  # float64
        ("scalar", np.array(2.5, dtype=np.float16)),
        ("empty", np.zeros((0, 3), dtype=np.int64)),
        ("mask", np.array([True, False, True])),
        ("ints", np.arange(6, dtype=np.int8).reshape(2, 3)),
        ("u", np.arange(4, dtype=np.uint32)),
        ("c", np.array([1 + 2j], dtype=np.complex64)),
    ]


def _object(header: dict[str, Any], data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def test_round_trip_keeps_order_dtypes_shapes_and_values() -> None:
    tensors = _tensors()
    blob = encode(tensors, metadata={"round": "3"})
    decoded = decode(blob)
    assert [name for name, _ in decoded] == [name for name, _ in tensors]
    for (_, got), (_, want) in zip(decoded, tensors, strict=True):
        assert got.dtype == want.dtype
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        assert got.flags.writeable
    # Non-contiguous and big-endian inputs are written as little-endian C order.
    odd = np.arange(12, dtype=">i4").reshape(3, 4)[:, ::2]
    [(_, back)] = decode(encode({"odd": odd}))
    assert back.dtype == np.dtype("<i4")
    np.testing.assert_array_equal(back, odd)


def test_interoperates_with_the_safetensors_package() -> None:
    tensors = _tensors()
    ours = encode(tensors)
    theirs = st.load(ours)
    for name, want in tensors:
        np.testing.assert_array_equal(theirs[name], want)
    # The package sorts by dtype and name; we read in data order, all tensors intact.
    blob = st.save(dict(tensors), metadata={"k": "v"})
    reader = SafetensorsReader(io.BytesIO(blob), max_bytes=len(blob), object_size=len(blob))
    assert dict(reader.header.metadata) == {"k": "v"}
    got = dict(reader)
    assert set(got) == {name for name, _ in tensors}
    for name, want in tensors:
        np.testing.assert_array_equal(got[name], want)


def test_bfloat16_round_trips_with_ml_dtypes() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    array = np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16)
    [(_, back)] = decode(encode({"b": array}))
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back.astype(np.float32), [1.5, -2.0])


class _CountingStream(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._inner.readinto(buffer)
        self.consumed += n
        return n


def test_reads_one_tensor_at_a_time() -> None:
    big = [(f"layer.{i}", np.full((256, 256), i, dtype=np.float32)) for i in range(4)]
    blob = encode(big)
    stream = _CountingStream(blob)
    reader = SafetensorsReader(stream, max_bytes=len(blob))
    header_end = 8 + reader.header.header_bytes
    assert stream.consumed == header_end  # only the header before the first tensor
    for i in range(4):
        item = reader.read_next()
        assert item is not None
        assert item[0] == f"layer.{i}"
        assert float(item[1][0, 0]) == i
        assert stream.consumed == header_end + (i + 1) * 256 * 256 * 4
    assert reader.read_next() is None
    assert reader.read_next() is None


def test_a_streamed_encoding_equals_the_bytes_and_reads_in_small_pieces() -> None:
    tensors = _tensors()
    body = EncodedTensors(tensors)
    pieces = []
    while chunk := body.read(7):
        pieces.append(chunk)
    blob = b"".join(pieces)
    assert len(blob) == body.length == len(encode(tensors))
    assert blob == encode(tensors)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x01\x02", "2 bytes is too short"),
        (struct.pack("<Q", 0), "header length prefix says 0 bytes"),
        (struct.pack("<Q", 1 << 40) + b"{}", "prefix says 1099511627776 bytes"),
        (struct.pack("<Q", 10) + b"{}", "prefix says 10 bytes but the object has only 10"),
        (
            _object({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4),
            r"s3://b/k: the header describes \d+ bytes but the object has \d+ \(truncated\)",
        ),
        (struct.pack("<Q", 4) + b"\xff{}}", "not valid JSON"),
        (struct.pack("<Q", 2) + b"[]", "the header is a JSON list, not an object"),
        (struct.pack("<Q", 4) + b"{,}}", "not valid JSON"),
        (pickle.dumps({"layer": [1.0, 2.0]}), "not a safetensors object"),
    ],
)
def test_bad_starts_are_refused(blob: bytes, message: str) -> None:
    with pytest.raises(SafetensorsError, match=message):
        decode(blob, source="s3://b/k")


F32x2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"a": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}, "unknown dtype"),
        ({"a": {"dtype": 3, "shape": [2], "data_offsets": [0, 8]}}, "dtype is a int"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, "hold 8 bytes but"),
        ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, "not a list of int"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, "0 <= begin <= end"),
        ({"a": {"dtype": "F32", "shape": [2]}}, r"missing \['data_offsets'\]"),
        ({"a": {**F32x2, "extra": 1}}, r"unexpected \['extra'\]"),
        ({"a": [1, 2]}, "entry is a list"),
        ({"a": {**F32x2, "data_offsets": [4, 12]}}, "starts at byte 4.*leaves a gap"),
        (
            {"a": F32x2, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
            "'b' starts at byte 4.*overlaps",
        ),
        ({"__metadata__": {"k": 1}, "a": F32x2}, "__metadata__ must map strings"),
    ],
)
def test_bad_headers_name_the_tensor_and_problem(header: dict[str, Any], message: str) -> None:
    with pytest.raises(SafetensorsError, match=message):
        decode(_object(header, b"\0" * 16))


def test_duplicate_names_sizes_and_limits() -> None:
    text = b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "a": {}}'
    with pytest.raises(SafetensorsError, match="names 'a' twice"):
        decode(struct.pack("<Q", len(text)) + text + b"\0")
    blob = encode({"a": np.zeros(100, np.float32)})
    with pytest.raises(SafetensorsError, match=f"holds {len(blob)} bytes, over the limit of 300"):
        decode(blob, max_bytes=300)
    with pytest.raises(SafetensorsError, match="over the limit"):
        parse_header(blob[8 : 8 + struct.unpack("<Q", blob[:8])[0]], max_bytes=100)
    # Without the object's size, truncation and trailing bytes show up while streaming.
    with pytest.raises(SafetensorsError, match="truncated: the header needs 10 bytes"):
        SafetensorsReader(io.BytesIO(struct.pack("<Q", 10) + b"{}"), max_bytes=100)
    with pytest.raises(SafetensorsError, match="truncated: tensor 'a' needs 400 bytes"):
        list(SafetensorsReader(io.BytesIO(blob[:-1]), max_bytes=1 << 20, source="x"))
    with pytest.raises(SafetensorsError, match="more bytes after its last tensor"):
        list(SafetensorsReader(io.BytesIO(blob + b"!"), max_bytes=1 << 20))
    with pytest.raises(SafetensorsError, match=r"object has \d+ \(truncated\)"):
        decode(blob[:-1])
    with pytest.raises(SafetensorsError, match=r"\(trailing data\)"):
        decode(blob + b"!")


def test_bool_bytes_other_than_zero_and_one_are_refused() -> None:
    blob = _object({"m": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}}, b"\x01\x07")
    with pytest.raises(SafetensorsError, match="'m': BOOL data holds bytes other than 0 and 1"):
        decode(blob)


def test_unwritable_tensors_and_names() -> None:
    with pytest.raises(SafetensorsError, match="tensor 'o': dtype object has no safetensors"):
        encode({"o": np.array([{}], dtype=object)})
    with pytest.raises(SafetensorsError, match="dtype <U1"):
        encode({"s": np.array(["x"])})
    with pytest.raises(SafetensorsError, match="complex128"):
        encode({"c": np.zeros(1, np.complex128)})
    with pytest.raises(SafetensorsError, match="appears twice"):
        encode([("a", np.zeros(1)), ("a", np.zeros(1))])
    with pytest.raises(SafetensorsError, match="'__metadata__' is not allowed"):
        encode({"__metadata__": np.zeros(1)})
    assert [n for n, _ in named_tensors([np.zeros(1), np.ones(2)])] == ["layer.0", "layer.1"]


def test_memory_stays_at_one_tensor_when_writing_and_reading(tmp_path: Any) -> None:
    import shutil
    import tracemalloc

    layer_bytes = 8 << 20
    layers = [(f"layer.{i}", np.full(layer_bytes // 4, i, np.float32)) for i in range(8)]
    path = tmp_path / "model.safetensors"
    tracemalloc.start()
    try:
        body = EncodedTensors(layers)
        with path.open("wb") as out:
            shutil.copyfileobj(body, out, 1 << 20)
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with path.open("rb") as stream:
            reader = SafetensorsReader(stream, max_bytes=path.stat().st_size + 1)
            total = 0
            for name, array in reader:
                assert float(array[-1]) == int(name.rsplit(".", 1)[1])
                total += array.nbytes
                del array
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 8 * layer_bytes
    # 64 MiB went through; the encoder copies nothing, the reader holds one layer at a time.
    assert write_peak < 8 << 20, write_peak
    assert read_peak < layer_bytes + (4 << 20), read_peak
