"""``TensorAssembler.receive_in_place``: raw tensor bytes read straight into the arrays."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

from sedna.api.common.v1.tensor_pb2 import TensorFrame
from sedna.tensor import TensorAssembler, TensorStreamError, plan_frames


def named(*arrays: Any) -> list[tuple[str, Any]]:
    return [(f"t{i}", a) for i, a in enumerate(arrays)]


def test_the_bytes_land_in_the_arrays_chunk_by_chunk_and_are_checked() -> None:
    arrays = [np.arange(1000, dtype=np.float32), np.zeros(0, np.float64), np.ones((3, 5))]
    plan = plan_frames(named(*arrays), chunk_size=1024)
    stream = io.BytesIO(b"".join(bytes(p) for p in plan.payloads))
    sizes: list[int] = []

    def read(view: memoryview) -> None:
        sizes.append(len(view))
        assert stream.readinto(view) == len(view)

    assembler = TensorAssembler()
    assembler.feed(TensorFrame(manifest=plan.manifest))
    assembler.receive_in_place(read)
    assert assembler.complete
    assert sizes == [1024, 1024, 1024, 928, 120]  # chunk_size cuts, per tensor
    for (_name, got), want in zip(assembler.result(), arrays, strict=True):
        np.testing.assert_array_equal(got, want)


def test_into_arrays_are_filled_in_place() -> None:
    sent = np.arange(64, dtype=np.float32)
    plan = plan_frames(named(sent), chunk_size=100)
    stream = io.BytesIO(bytes(plan.payloads[0]))
    mine = np.zeros(64, np.float32)
    assembler = TensorAssembler(into=[mine])
    assembler.feed(TensorFrame(manifest=plan.manifest))
    assembler.receive_in_place(stream.readinto)
    assert assembler.result()[0][1] is mine
    np.testing.assert_array_equal(mine, sent)


def test_corrupted_bytes_fail_the_crc_and_the_assembler() -> None:
    plan = plan_frames(named(np.arange(10, dtype=np.int32)), chunk_size=16)
    data = bytearray(bytes(plan.payloads[0]))
    data[5] ^= 0xFF
    stream = io.BytesIO(bytes(data))
    assembler = TensorAssembler()
    assembler.feed(TensorFrame(manifest=plan.manifest))
    with pytest.raises(TensorStreamError, match="CRC-32 mismatch"):
        assembler.receive_in_place(stream.readinto)
    with pytest.raises(TensorStreamError, match="already"):
        assembler.result()


def test_a_failing_read_fails_the_assembler_and_propagates() -> None:
    plan = plan_frames(named(np.ones(10)), chunk_size=16)
    assembler = TensorAssembler()
    assembler.feed(TensorFrame(manifest=plan.manifest))

    def read(view: memoryview) -> None:
        raise ConnectionError("peer gone")

    with pytest.raises(ConnectionError, match="peer gone"):
        assembler.receive_in_place(read)
    with pytest.raises(TensorStreamError, match="peer gone"):
        assembler.result()


def test_before_the_manifest_it_is_a_stream_error() -> None:
    with pytest.raises(TensorStreamError, match="before the manifest"):
        TensorAssembler().receive_in_place(lambda view: None)
