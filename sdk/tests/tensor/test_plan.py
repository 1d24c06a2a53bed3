"""``plan_frames``: one manifest (layout and CRC-32s) computed once, streamed many times."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sedna.api.common.v1.tensor_pb2 import TensorFrame
from sedna.tensor import TensorAssembler, TensorError, iter_frames, plan_frames

Array = np.ndarray[Any, Any]


def _tensors() -> list[tuple[str, Array]]:
    rng = np.random.default_rng(7)
    return [
        ("w", rng.standard_normal((37, 11)).astype(np.float32)),
        ("empty", np.zeros((0, 3), np.float32)),
        ("b", rng.standard_normal(5).astype(np.float64)),
        ("s", np.array(3, np.int16)),
    ]


def test_plan_frames_are_those_of_iter_frames_every_time() -> None:
    tensors = _tensors()
    expected = [f.SerializeToString() for f in iter_frames(tensors, chunk_size=64)]
    plan = plan_frames(tensors, chunk_size=64)
    for _ in range(2):  # a plan streams any number of times
        assert [f.SerializeToString() for f in plan.frames()] == expected


def test_plan_chunks_fill_messages_that_reassemble_bit_for_bit() -> None:
    tensors = _tensors()
    plan = plan_frames(tensors, chunk_size=100)
    assembler = TensorAssembler()
    assembler.feed(TensorFrame(manifest=plan.manifest))
    for index, offset, data in plan.chunks():
        frame = TensorFrame()
        frame.chunk.tensor_index = index
        frame.chunk.offset = offset
        frame.chunk.data = data.tobytes()
        assembler.feed(frame)
    assert assembler.complete
    for (name, array), (got_name, got) in zip(tensors, assembler.result(), strict=True):
        assert got_name == name
        assert got.dtype == array.dtype
        assert got.shape == array.shape
        assert got.tobytes() == array.tobytes()


def test_plan_chunks_are_views_not_copies() -> None:
    array = np.arange(40, dtype=np.float32)
    plan = plan_frames([("a", array)], chunk_size=64)
    _index, _offset, first = next(plan.chunks())
    array[0] = 99.0
    assert np.frombuffer(first, np.float32)[0] == 99.0


def test_plan_frames_checks_its_arguments_up_front() -> None:
    with pytest.raises(TensorError, match="chunk_size"):
        plan_frames([("a", np.ones(2))], chunk_size=0)
    with pytest.raises(TensorError, match=r"no wire|dtype|object"):
        plan_frames([("a", np.array(["x"], dtype=object))])


def test_known_crc32s_are_used_as_given() -> None:
    import numpy as np

    from sedna.tensor import TensorError, plan_frames

    arrays = [("a", np.arange(10, dtype=np.float32)), ("b", np.ones(3, np.float64))]
    computed = plan_frames(arrays, chunk_size=16)
    given = plan_frames(arrays, chunk_size=16, crc32s=[t.crc32 for t in computed.manifest.tensors])
    assert given.manifest == computed.manifest
    assert plan_frames(arrays, chunk_size=16, crc32s=[1, 2]).manifest.tensors[1].crc32 == 2
    import pytest

    with pytest.raises(TensorError, match="1 CRC-32s for 2 tensors"):
        plan_frames(arrays, chunk_size=16, crc32s=[1])
