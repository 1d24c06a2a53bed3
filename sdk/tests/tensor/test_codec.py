"""The single-message codec: layout, zero-copy decoding, and every rejection."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np
import pytest

from sedna.api.common.v1.tensor_pb2 import DataType, Tensor, TensorSet
from sedna.tensor import (
    TensorError,
    from_proto,
    from_proto_set,
    to_proto,
    to_proto_set,
)
from sedna.tensor import dtypes as dtypes_module

F32 = DataType.DATA_TYPE_FLOAT32


@pytest.fixture
def without_ml_dtypes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    dtypes_module._bfloat16.cache_clear()
    yield
    dtypes_module._bfloat16.cache_clear()


def test_content_is_little_endian_row_major() -> None:
    array = np.array([[1, 2], [3, 4]], dtype=">u2").T  # big-endian and column-major
    message = to_proto(array, "w")
    assert message.dtype == DataType.DATA_TYPE_UINT16
    assert list(message.shape) == [2, 2]
    assert message.content == bytes([1, 0, 3, 0, 2, 0, 4, 0])


def test_scalar_has_an_empty_shape() -> None:
    message = to_proto(np.float64(2.0))
    assert list(message.shape) == []
    assert message.content == np.float64(2.0).tobytes()
    assert from_proto(message).shape == ()


def test_zero_size_array_has_no_content() -> None:
    message = to_proto(np.empty((4, 0, 2), np.complex64))
    assert message.content == b""
    decoded = from_proto(message)
    assert decoded.shape == (4, 0, 2)
    assert decoded.dtype == np.complex64


def test_decoding_is_zero_copy_and_read_only() -> None:
    message = to_proto(np.arange(6, dtype=np.int32).reshape(2, 3))
    decoded = from_proto(message)
    assert not decoded.flags.writeable
    assert not decoded.flags.owndata
    base: object = decoded
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, bytes)  # ... namely over the content bytes, not a copy of them
    with pytest.raises(ValueError, match="read-only"):
        decoded[0, 0] = 1


def test_copy_gives_a_writable_independent_array() -> None:
    message = to_proto(np.arange(3, dtype=np.float32))
    copied = from_proto(message, copy=True)
    copied[0] = 42
    assert copied.flags.writeable
    assert copied.flags.owndata
    assert from_proto(message)[0] == 0


def test_tensor_set_allows_duplicate_and_empty_names() -> None:
    pairs = [("", np.int8(1)), ("x", np.int8(2)), ("x", np.int8(3))]
    decoded = from_proto_set(to_proto_set(pairs))
    assert [(name, int(array)) for name, array in decoded] == [("", 1), ("x", 2), ("x", 3)]


# ---------------------------------------------------------------------------------------------
# Rejections


def test_content_too_short_names_tensor_and_sizes() -> None:
    message = Tensor(name="fc.weight", dtype=F32, shape=[2, 3], content=b"\0" * 20)
    with pytest.raises(
        TensorError,
        match=r"tensor 'fc.weight': content is 20 bytes, but DATA_TYPE_FLOAT32 x \(2, 3\) "
        r"needs 24 bytes",
    ):
        from_proto(message)


def test_content_too_long_is_refused() -> None:
    message = Tensor(name="b", dtype=DataType.DATA_TYPE_INT64, shape=[], content=b"\0" * 9)
    with pytest.raises(TensorError, match=r"content is 9 bytes, but .* needs 8 bytes"):
        from_proto(message)


def test_content_for_zero_size_shape_is_refused() -> None:
    message = Tensor(name="z", dtype=F32, shape=[0, 5], content=b"\0" * 4)
    with pytest.raises(TensorError, match=r"content is 4 bytes, but .* needs 0 bytes"):
        from_proto(message)


def test_negative_dimension_is_refused() -> None:
    message = Tensor(name="neg", dtype=F32, shape=[2, -3], content=b"")
    with pytest.raises(
        TensorError, match=r"tensor 'neg': negative dimension -3 in shape \(2, -3\)"
    ):
        from_proto(message)


@pytest.mark.parametrize("shape", [[2**62, 2**62], [2**31, 2**31, 4], [0, 2**62]])
def test_overflowing_shape_is_refused(shape: list[int]) -> None:
    message = Tensor(name="huge", dtype=DataType.DATA_TYPE_FLOAT64, shape=shape, content=b"")
    with pytest.raises(TensorError, match=r"tensor 'huge': shape .* overflows"):
        from_proto(message)


def test_too_many_dimensions_is_a_tensor_error() -> None:
    message = Tensor(name="deep", dtype=DataType.DATA_TYPE_UINT8, shape=[1] * 100, content=b"x")
    with pytest.raises(TensorError, match="tensor 'deep': cannot lay out shape"):
        from_proto(message)


@pytest.mark.parametrize(
    ("value", "message"),
    [(0, "dtype is DATA_TYPE_UNSPECIFIED"), (99, "unknown DataType value 99")],
)
def test_bad_dtype_names_the_tensor(value: int, message: str) -> None:
    # Serialized and parsed so that the out-of-range enum is what a newer peer would send.
    wire = Tensor(name="t", dtype=value, shape=[1], content=b"\0")  # type: ignore[arg-type]
    parsed = Tensor.FromString(wire.SerializeToString())
    with pytest.raises(TensorError, match=f"tensor 't': {message}"):
        from_proto(parsed)


def test_bfloat16_without_ml_dtypes_is_explained(without_ml_dtypes: None) -> None:
    message = Tensor(name="bf", dtype=DataType.DATA_TYPE_BFLOAT16, shape=[2], content=b"\0" * 4)
    with pytest.raises(TensorError, match=r"tensor 'bf': DATA_TYPE_BFLOAT16 needs .*ml_dtypes"):
        from_proto(message)


def test_bool_bytes_other_than_0_and_1_are_refused() -> None:
    message = Tensor(name="mask", dtype=DataType.DATA_TYPE_BOOL, shape=[3], content=b"\0\1\2")
    with pytest.raises(TensorError, match="tensor 'mask': bool tensor holds bytes other than"):
        from_proto(message)


def test_unsupported_array_dtype_names_the_tensor() -> None:
    with pytest.raises(TensorError, match=r"tensor 'labels': unsupported numpy dtype '<U5'"):
        to_proto(np.array(["hello"]), "labels")
    with pytest.raises(TensorError, match=r"tensor #1 'obj': unsupported numpy dtype 'object'"):
        to_proto_set([("ok", np.zeros(1)), ("obj", np.array([None]))])


def test_tensor_set_names_the_bad_tensor_by_position() -> None:
    good = Tensor(name="a", dtype=F32, shape=[1], content=b"\0" * 4)
    bad = Tensor(name="b", dtype=F32, shape=[2], content=b"\0" * 4)
    with pytest.raises(TensorError, match=r"tensor #1 'b': content is 4 bytes"):
        from_proto_set(TensorSet(tensors=[good, bad]))


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        (np.zeros((2, 2)), "expected a mapping of names to arrays"),
        ([np.zeros(2)], r"item #0 is not a \(name, array\) pair"),
        ([("a", np.zeros(2)), (1, np.zeros(2))], r"item #1 is not a \(name, array\) pair"),
        ([("a", np.zeros(2), "extra")], r"item #0 is not a \(name, array\) pair"),
        ({1: np.zeros(2)}, "tensor names must be str, got int: 1"),
    ],
)
def test_bad_tensor_collections_are_refused(tensors: object, message: str) -> None:
    with pytest.raises(TensorError, match=message):
        to_proto_set(tensors)  # type: ignore[arg-type]


def test_errors_are_value_errors() -> None:
    assert issubclass(TensorError, ValueError)
