"""Single-message tensor codec: numpy arrays to and from ``Tensor`` and ``TensorSet``.

A tensor travels as its ``DataType``, its shape and its elements as raw little-endian bytes in
row-major order, never pickled. One message holds the whole tensor, so this is for tensors well
under the channel's message size limit (4 MiB by default in gRPC); stream anything larger with
:func:`sedna.tensor.iter_frames`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from sedna.api.common.v1.tensor_pb2 import Tensor, TensorSet
from sedna.tensor._wire import (
    NamedArrays,
    as_wire_array,
    check_bool_bytes,
    checked_nbytes,
    describe,
    describe_layout,
    iter_named,
    wire_dtype,
)
from sedna.tensor.errors import TensorError

__all__ = ["from_proto", "from_proto_set", "to_proto", "to_proto_set"]


def to_proto(array: npt.ArrayLike, name: str = "") -> Tensor:
    """Encode an array as a ``Tensor`` message.

    Parameters
    ----------
    array
        Anything :func:`numpy.asarray` accepts with a supported dtype (see
        :func:`sedna.tensor.from_numpy_dtype`). Big-endian and non-contiguous arrays are
        converted to the wire's little-endian C order; scalars (shape ``()``) and zero-size
        arrays are fine.
    name
        Optional tensor name, e.g. the layer a weight belongs to.

    Returns
    -------
    Tensor
        The message. Its ``content`` is a copy of the array's bytes: the protobuf runtime takes
        only ``bytes`` (and copies them again into the message), so even a contiguous
        little-endian array is copied.

    Raises
    ------
    TensorError
        If the dtype has no wire equivalent.
    """
    arr, data_type = as_wire_array(array, describe(name))
    return Tensor(name=name, dtype=data_type, shape=arr.shape, content=arr.tobytes())


def from_proto(tensor: Tensor, *, copy: bool = False) -> np.ndarray[Any, Any]:
    """Decode a ``Tensor`` message into an array.

    Parameters
    ----------
    tensor
        The message.
    copy
        ``False`` (the default) returns a **read-only** array viewing the ``bytes`` the protobuf
        runtime hands out for ``content``, with no copy of its own; the array keeps those bytes
        alive, not the message. ``True`` returns a writable copy.

    Returns
    -------
    numpy.ndarray
        An array of ``tensor.shape`` with the little-endian dtype of ``tensor.dtype`` (the
        native dtype on little-endian hosts).

    Raises
    ------
    TensorError
        If the dtype is unknown or unsupported here, the shape has a negative dimension or
        overflows, the content's size is not ``product(shape) * itemsize``, or a bool tensor
        holds bytes other than 0 and 1. The message names the tensor.
    """
    return _decode(tensor, describe(tensor.name), copy=copy)


def _decode(tensor: Tensor, what: str, *, copy: bool) -> np.ndarray[Any, Any]:
    shape = tuple(tensor.shape)
    expected = checked_nbytes(tensor.dtype, shape, what)
    dtype = wire_dtype(tensor.dtype, what)
    # Read the field once: each access to a bytes field makes a new ``bytes`` object.
    content = tensor.content
    if len(content) != expected:
        raise TensorError(
            f"{what}: content is {len(content)} bytes, but "
            f"{describe_layout(tensor.dtype, shape)} needs {expected} bytes"
        )
    try:
        array = np.frombuffer(content, dtype=dtype).reshape(shape)
    except ValueError as exc:  # e.g. more dimensions than numpy supports
        raise TensorError(f"{what}: cannot lay out shape {shape}: {exc}") from None
    if dtype == np.bool_:
        check_bool_bytes(array, what)
    return array.copy() if copy else array


def to_proto_set(tensors: NamedArrays) -> TensorSet:
    """Encode named arrays as a ``TensorSet`` message, keeping their order.

    Parameters
    ----------
    tensors
        A mapping of names to arrays, or an iterable of ``(name, array)`` pairs (names may
        repeat or be empty in that form).

    Returns
    -------
    TensorSet
        One ``Tensor`` per array, in order; see :func:`to_proto`.

    Raises
    ------
    TensorError
        If an item is not a ``(name, array)`` pair or an array's dtype has no wire equivalent.
    """
    message = TensorSet()
    for index, (name, array) in enumerate(iter_named(tensors)):
        arr, data_type = as_wire_array(array, describe(name, index))
        # Filled in place: building a Tensor and appending it would copy its content once more.
        entry = message.tensors.add()
        entry.name = name
        entry.dtype = data_type
        entry.shape.extend(arr.shape)
        entry.content = arr.tobytes()
    return message


def from_proto_set(
    tensor_set: TensorSet, *, copy: bool = False
) -> list[tuple[str, np.ndarray[Any, Any]]]:
    """Decode a ``TensorSet`` message into ``(name, array)`` pairs, in order.

    Parameters
    ----------
    tensor_set
        The message.
    copy
        As for :func:`from_proto`: read-only zero-copy arrays by default, writable copies with
        ``True``.

    Returns
    -------
    list of (str, numpy.ndarray)
        The tensors in message order; pass it to :class:`dict` when the names are unique.

    Raises
    ------
    TensorError
        As :func:`from_proto`, naming the tensor by position and name.
    """
    return [
        (tensor.name, _decode(tensor, describe(tensor.name, index), copy=copy))
        for index, tensor in enumerate(tensor_set.tensors)
    ]
