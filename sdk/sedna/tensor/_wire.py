"""Layout rules shared by the single-message codec and the chunked stream.

Private: the public surface is :mod:`sedna.tensor`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt

from sedna.api.common.v1.tensor_pb2 import DataType
from sedna.tensor.dtypes import data_type_name, from_numpy_dtype, itemsize, to_numpy_dtype
from sedna.tensor.errors import TensorError

NamedArrays: TypeAlias = Mapping[str, npt.ArrayLike] | Iterable[tuple[str, npt.ArrayLike]]
"""Tensors to send: a mapping of names to arrays, or ``(name, array)`` pairs in order."""

# numpy cannot address more bytes than its index type holds; a shape beyond that is corrupt or
# hostile whatever the dtype, and must be refused before anything is allocated.
MAX_BYTES: Final = int(np.iinfo(np.intp).max)


def describe(name: str, index: int | None = None) -> str:
    """Name a tensor in error messages: ``tensor #3 'fc.weight'``."""
    where = "tensor" if index is None else f"tensor #{index}"
    return f"{where} {name!r}"


def iter_named(tensors: NamedArrays) -> Iterator[tuple[str, npt.ArrayLike]]:
    """Yield ``(name, array)`` from a mapping or from pairs, checking the pairs' shape."""
    if isinstance(tensors, Mapping):
        for name, array in tensors.items():
            if not isinstance(name, str):
                raise TensorError(f"tensor names must be str, got {type(name).__name__}: {name!r}")
            yield name, array
        return
    if isinstance(tensors, np.ndarray | str | bytes):
        # Iterating an array yields its rows, which would fail later with a baffling message.
        raise TensorError(
            f"expected a mapping of names to arrays or (name, array) pairs, got {type(tensors)}"
        )
    for position, item in enumerate(tensors):
        if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str)):
            raise TensorError(
                f"item #{position} is not a (name, array) pair: got {type(item).__name__}"
            )
        yield item[0], item[1]


def as_wire_array(
    array: npt.ArrayLike, what: str
) -> tuple[np.ndarray[Any, Any], DataType.ValueType]:
    """Return ``array`` laid out as on the wire, with its ``DataType`` value.

    The result is little-endian and C-contiguous; it is ``array`` itself (no copy) when that
    already holds, which is the common case on little-endian hosts.
    """
    arr = np.asarray(array)
    try:
        data_type = from_numpy_dtype(arr.dtype)
    except TensorError as exc:
        raise TensorError(f"{what}: {exc}") from None
    # asarray with order="C" (unlike ascontiguousarray) keeps 0-d arrays 0-d, and copies only
    # when the byte order or the memory layout has to change.
    return np.asarray(arr, dtype=to_numpy_dtype(data_type), order="C"), data_type


def checked_nbytes(data_type: int, shape: Sequence[int], what: str) -> int:
    """Return ``product(shape) * itemsize(data_type)``, refusing impossible shapes.

    Raises
    ------
    TensorError
        For an unknown ``data_type``, a negative dimension, or a shape whose size numpy could
        not address (checked like numpy does, ignoring zero dimensions, so that ``(0, 2**62)``
        float64 is refused here rather than by ``numpy.empty`` later).
    """
    try:
        size = itemsize(data_type)
    except TensorError as exc:
        raise TensorError(f"{what}: {exc}") from None
    count = 1
    bound = size
    for dim in shape:
        if dim < 0:
            raise TensorError(f"{what}: negative dimension {dim} in shape {tuple(shape)}")
        count *= dim
        if dim:
            bound *= dim
            if bound > MAX_BYTES:
                raise TensorError(
                    f"{what}: shape {tuple(shape)} of {data_type_name(data_type)} overflows: "
                    f"more than the {MAX_BYTES} bytes an array can address"
                )
    return count * size


def wire_dtype(data_type: int, what: str) -> np.dtype[Any]:
    """Return :func:`~sedna.tensor.dtypes.to_numpy_dtype` with the tensor named on error."""
    try:
        return to_numpy_dtype(data_type)
    except TensorError as exc:
        raise TensorError(f"{what}: {exc}") from None


def check_bool_bytes(data: np.ndarray[Any, Any], what: str) -> None:
    """Refuse a bool tensor whose bytes are not all 0 or 1.

    numpy would accept any byte as a bool and then compare, sum and index with it
    inconsistently, so a bad byte from the wire is an error, not a silent ``True``.
    """
    if data.size and int(data.reshape(-1).view(np.uint8).max()) > 1:
        raise TensorError(f"{what}: bool tensor holds bytes other than 0 and 1")


def describe_layout(data_type: int, shape: Sequence[int]) -> str:
    """Describe dtype and shape for size messages: ``DATA_TYPE_FLOAT32 x (2, 3)``."""
    return f"{data_type_name(data_type)} x {tuple(shape)}"


__all__ = [
    "MAX_BYTES",
    "NamedArrays",
    "as_wire_array",
    "check_bool_bytes",
    "checked_nbytes",
    "describe",
    "describe_layout",
    "iter_named",
    "wire_dtype",
]
