"""Memory properties of the stream: the payload is the only large allocation.

tracemalloc sees numpy's buffers and Python ``bytes``; the protobuf runtime's own arenas are not
traced, so these bound what this package allocates, which is what it controls.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from sedna.api.common.v1.tensor_pb2 import TensorFrame
from sedna.tensor import TensorAssembler, iter_frames

PAYLOAD_BYTES = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def payload() -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(7)
    return rng.standard_normal(PAYLOAD_BYTES // 4, dtype=np.float32)


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def test_reassembly_holds_about_one_copy(payload: np.ndarray[Any, Any], traced: None) -> None:
    assembler = TensorAssembler()
    for frame in iter_frames({"w": payload}):
        # What crosses the wire: serialized bytes in, parsed message out.
        assembler.feed(TensorFrame.FromString(frame.SerializeToString()))
    _, peak = tracemalloc.get_traced_memory()
    ((name, received),) = assembler.result()

    assert name == "w"
    assert np.array_equal(received, payload)
    # One receive buffer plus a few chunks in flight; a design that concatenated chunks or
    # copied the result would be at 2x or more.
    assert peak < 2.5 * payload.nbytes, f"peak {peak / payload.nbytes:.2f}x the payload"


def test_sending_does_not_copy_a_contiguous_array(
    payload: np.ndarray[Any, Any], traced: None
) -> None:
    sent = 0
    for frame in iter_frames({"w": payload}):
        sent += len(frame.chunk.data)
    _, peak = tracemalloc.get_traced_memory()

    assert sent == payload.nbytes
    # Only chunk-sized buffers, never the whole tensor.
    assert peak < 0.2 * payload.nbytes, f"peak {peak / payload.nbytes:.2f}x the payload"
