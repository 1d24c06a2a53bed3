"""StreamCursor: the chunk rules both receivers (assembler, aggregator) share, on their own."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sedna.tensor import TensorStreamError, iter_frames
from sedna.tensor.crc import crc32
from sedna.tensor.streaming import StreamCursor, check_manifest


def cursor_for(tensors: dict[str, np.ndarray[Any, Any]], chunk_size: int) -> StreamCursor:
    manifest = next(iter(iter_frames(tensors, chunk_size=chunk_size))).manifest
    layouts, total = check_manifest(manifest, max_tensors=10, max_total_bytes=1 << 20)
    return StreamCursor(layouts, chunk_size=manifest.chunk_size, total_bytes=total)


def test_a_stream_walks_tensor_by_tensor_and_passes_empty_ones() -> None:
    a = np.arange(3, dtype=np.float32)  # 12 bytes: chunks of 8 and 4
    cursor = cursor_for({"e0": np.empty(0, np.float32), "a": a, "e1": np.empty(0, np.int8)}, 8)
    assert cursor.skip_empty() == [0]
    data = a.tobytes()
    layout, got, completes = cursor.accept(1, 0, memoryview(a).cast("B")[:8])
    assert (layout.name, bytes(got), completes) == ("a", data[:8], False)
    assert (cursor.current, cursor.offset, cursor.received) == (1, 8, 8)
    layout, got, completes = cursor.accept(1, 8, data[8:])
    assert completes
    assert (cursor.current, cursor.offset) == (2, 0)
    assert cursor.skip_empty() == [2]
    assert cursor.done
    cursor.check_complete()


def test_typed_views_are_counted_in_bytes() -> None:
    a = np.arange(4, dtype=np.float32)
    cursor = cursor_for({"a": a}, 16)
    _layout, got, completes = cursor.accept(0, 0, memoryview(a))
    assert isinstance(got, memoryview)
    assert (got.format, len(got), completes) == ("B", 16, True)


@pytest.mark.parametrize(
    ("index", "offset", "size", "message"),
    [
        (
            1,
            0,
            8,
            r"chunk for tensor #1 'b' \(not started\) while tensor #0 'a' is incomplete at byte 0",
        ),
        (5, 0, 8, "tensor_index 5 is out of range: the manifest lists 2 tensors"),
        (0, 8, 8, "gap of 8 bytes"),
        (0, 0, 12, "chunk of 12 bytes at offset 0 is larger than the manifest's chunk_size 8"),
        (0, 0, 4, "short chunk of 4 bytes at offset 0"),
    ],
)
def test_a_chunk_that_breaks_a_rule_is_refused_by_name(
    index: int, offset: int, size: int, message: str
) -> None:
    cursor = cursor_for({"a": np.zeros(4, np.float32), "b": np.zeros(2, np.float32)}, 8)
    with pytest.raises(TensorStreamError, match=message):
        cursor.accept(index, offset, bytes(size))


def test_a_wrong_crc_fails_the_tensor_s_last_chunk_and_truncation_is_reported() -> None:
    a = np.arange(4, dtype=np.float32)
    cursor = cursor_for({"a": a}, 8)
    cursor.accept(0, 0, a.tobytes()[:8])
    with pytest.raises(
        TensorStreamError, match=r"truncated stream: tensor #0 'a' is missing 8 of its 16 bytes"
    ):
        cursor.check_complete()
    bad = bytes(8)
    expected = crc32(a.tobytes())
    with pytest.raises(
        TensorStreamError, match=f"CRC-32 mismatch: the manifest says {expected:#010x}"
    ):
        cursor.accept(0, 8, bad)
