"""The one mapping between the wire's ``DataType`` enum and numpy dtypes.

Every other module of :mod:`sedna.tensor` goes through these functions, so adding an element type
means touching this file (and ``tensor.proto``) only.

The numpy dtypes returned here are the *wire* dtypes: explicitly little-endian (``<f4``, not
``=f4``), because the bytes on the wire are little-endian whatever the host is. On the
little-endian hosts Sedna runs on they compare equal to the native dtypes.

``DATA_TYPE_BFLOAT16`` maps to ``ml_dtypes.bfloat16`` when the optional ``ml_dtypes`` package is
importable; Sedna does not depend on it, so without it bfloat16 tensors are rejected with an error
that says what to install.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sedna.api.common.v1.tensor_pb2 import DataType
from sedna.tensor.errors import TensorError

__all__ = [
    "data_type_name",
    "from_numpy_dtype",
    "itemsize",
    "supported_data_types",
    "to_numpy_dtype",
]

_BFLOAT16: Final = DataType.DATA_TYPE_BFLOAT16

# The types numpy has natively. Keys are plain ints so that values decoded from a newer peer
# (which protobuf hands over as ints outside the enum) can be looked up without a cast.
_NATIVE: Final[dict[int, np.dtype[Any]]] = {
    DataType.DATA_TYPE_BOOL: np.dtype("|b1"),
    DataType.DATA_TYPE_UINT8: np.dtype("|u1"),
    DataType.DATA_TYPE_INT8: np.dtype("|i1"),
    DataType.DATA_TYPE_UINT16: np.dtype("<u2"),
    DataType.DATA_TYPE_INT16: np.dtype("<i2"),
    DataType.DATA_TYPE_UINT32: np.dtype("<u4"),
    DataType.DATA_TYPE_INT32: np.dtype("<i4"),
    DataType.DATA_TYPE_UINT64: np.dtype("<u8"),
    DataType.DATA_TYPE_INT64: np.dtype("<i8"),
    DataType.DATA_TYPE_FLOAT16: np.dtype("<f2"),
    DataType.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    DataType.DATA_TYPE_FLOAT64: np.dtype("<f8"),
    DataType.DATA_TYPE_COMPLEX64: np.dtype("<c8"),
    DataType.DATA_TYPE_COMPLEX128: np.dtype("<c16"),
}

# numpy has several spellings of one type (``long`` and ``longlong`` are both int64 on Linux,
# any byte order), so the reverse lookup goes by (kind, itemsize) rather than dtype identity.
_BY_KIND_AND_SIZE: Final[dict[tuple[str, int], DataType.ValueType]] = {
    (dtype.kind, dtype.itemsize): DataType.ValueType(value) for value, dtype in _NATIVE.items()
}

_ITEMSIZES: Final[dict[int, int]] = {
    **{value: dtype.itemsize for value, dtype in _NATIVE.items()},
    _BFLOAT16: 2,
}

_SUPPORTED_TEXT: Final = (
    "bool, uint8, int8, uint16, int16, uint32, int32, uint64, int64, float16, float32, float64, "
    "complex64, complex128, and bfloat16 when ml_dtypes is installed"
)


@functools.cache
def _bfloat16() -> np.dtype[Any] | None:
    # Imported by name so that neither mypy nor the import of sedna.tensor needs ml_dtypes; cached
    # because a failed import is not cheap and the answer does not change within a process.
    try:
        ml_dtypes = importlib.import_module("ml_dtypes")
    except ImportError:
        return None
    bfloat16: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
    return bfloat16


def data_type_name(data_type: int) -> str:
    """Return the enum name of a ``DataType`` value, or a description of an unknown one.

    Parameters
    ----------
    data_type
        A ``DataType`` value, possibly one this build does not know.

    Returns
    -------
    str
        ``"DATA_TYPE_FLOAT32"`` for a known value, ``"DataType(99)"`` otherwise.
    """
    try:
        return DataType.Name(data_type)  # type: ignore[arg-type]
    except ValueError:
        return f"DataType({data_type})"


def _unknown(data_type: int) -> TensorError:
    if data_type == DataType.DATA_TYPE_UNSPECIFIED:
        return TensorError("dtype is DATA_TYPE_UNSPECIFIED (0): the sender did not set it")
    return TensorError(
        f"unknown DataType value {data_type}: not in this build's tensor.proto "
        "(sent by a newer peer?)"
    )


def itemsize(data_type: int) -> int:
    """Return the number of bytes of one element of ``data_type``.

    Works for ``DATA_TYPE_BFLOAT16`` (2) even without ``ml_dtypes``, so sizes can be checked
    before anything is decoded.

    Parameters
    ----------
    data_type
        A ``DataType`` value.

    Returns
    -------
    int
        The element size in bytes.

    Raises
    ------
    TensorError
        If ``data_type`` is ``DATA_TYPE_UNSPECIFIED`` or not a known ``DataType`` value.
    """
    try:
        return _ITEMSIZES[data_type]
    except KeyError:
        raise _unknown(data_type) from None


def to_numpy_dtype(data_type: int) -> np.dtype[Any]:
    """Return the little-endian numpy dtype of a wire ``DataType``.

    Parameters
    ----------
    data_type
        A ``DataType`` value, as read from a message (possibly one from a newer peer).

    Returns
    -------
    numpy.dtype
        The dtype the tensor's bytes are laid out in (``<f4`` for ``DATA_TYPE_FLOAT32``).

    Raises
    ------
    TensorError
        If ``data_type`` is ``DATA_TYPE_UNSPECIFIED``, not a known ``DataType`` value, or
        ``DATA_TYPE_BFLOAT16`` while ``ml_dtypes`` is not installed.
    """
    native = _NATIVE.get(data_type)
    if native is not None:
        return native
    if data_type == _BFLOAT16:
        bfloat16 = _bfloat16()
        if bfloat16 is None:
            raise TensorError(
                "DATA_TYPE_BFLOAT16 needs the optional 'ml_dtypes' package, which is not "
                "installed: pip install ml_dtypes"
            )
        return bfloat16
    raise _unknown(data_type)


def from_numpy_dtype(dtype: npt.DTypeLike) -> DataType.ValueType:
    """Return the wire ``DataType`` of a numpy dtype, whatever its byte order.

    Parameters
    ----------
    dtype
        Anything :class:`numpy.dtype` accepts: ``np.float32``, ``">i4"``, ``array.dtype`` ...

    Returns
    -------
    DataType.ValueType
        The matching ``DataType`` value.

    Raises
    ------
    TensorError
        If the dtype has no wire equivalent: object, strings, bytes, datetimes, structured or
        sub-array dtypes, ``longdouble``, bfloat16 without ``ml_dtypes``, other extension types.
    """
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise TensorError(f"not a numpy dtype: {dtype!r} ({exc})") from None
    # Only numpy's own plain numeric dtypes qualify here (isbuiltin 2 marks extension types, so
    # a future ml_dtypes bfloat16 reporting kind "f" is not taken for float16); a structured or
    # sub-array dtype must not slip through the (kind, size) lookup. Checked before bfloat16 so
    # that plain dtypes never import ml_dtypes (1.2 s and ~15 MiB, in the first call).
    if (
        resolved.kind in "biufc"
        and resolved.isbuiltin != 2
        and resolved.fields is None
        and resolved.subdtype is None
    ):
        found = _BY_KIND_AND_SIZE.get((resolved.kind, resolved.itemsize))
        if found is not None:
            return found
    bfloat16 = _bfloat16() if resolved.isbuiltin == 2 else None
    if bfloat16 is not None and resolved == bfloat16:
        return _BFLOAT16
    raise TensorError(
        f"unsupported numpy dtype {str(resolved)!r}: it has no wire DataType "
        f"(supported: {_SUPPORTED_TEXT})"
    )


def supported_data_types() -> tuple[DataType.ValueType, ...]:
    """Return the ``DataType`` values this process can encode and decode.

    Returns
    -------
    tuple of DataType.ValueType
        Every value but ``DATA_TYPE_UNSPECIFIED``, less ``DATA_TYPE_BFLOAT16`` when ``ml_dtypes``
        is not installed, in enum order.
    """
    values = set(_NATIVE)
    if _bfloat16() is not None:
        values.add(_BFLOAT16)
    return tuple(DataType.ValueType(value) for value in sorted(values))
