"""Tensor metadata and the mapping between Open Inference Protocol datatypes and NumPy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

__all__ = [
    "DATATYPE_TO_NUMPY",
    "DYNAMIC",
    "TensorSpec",
    "datatype_of",
    "numpy_dtype",
    "shape_matches",
]

DYNAMIC: Final = -1
"""Marks a variable dimension in a :class:`TensorSpec` shape, as in OIP metadata."""

DATATYPE_TO_NUMPY: Final[dict[str, np.dtype[np.generic]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
"""OIP datatype name → NumPy dtype (native byte order; BYTES tensors hold ``bytes`` objects)."""

_NUMPY_TO_DATATYPE: Final[dict[np.dtype[np.generic], str]] = {
    dtype: name for name, dtype in DATATYPE_TO_NUMPY.items()
}


def numpy_dtype(datatype: str) -> np.dtype[np.generic]:
    """Return the NumPy dtype of an OIP datatype.

    Parameters
    ----------
    datatype
        An OIP datatype name such as ``"FP32"``.

    Returns
    -------
    numpy.dtype
        The matching dtype.

    Raises
    ------
    KeyError
        Unknown or unsupported datatype (e.g. ``BF16``).
    """
    return DATATYPE_TO_NUMPY[datatype]


def datatype_of(dtype: np.dtype[np.generic]) -> str:
    """Return the OIP datatype name of a NumPy dtype.

    Parameters
    ----------
    dtype
        A NumPy dtype; strings (``str_``, ``bytes_``) and ``object`` map to ``BYTES``.

    Returns
    -------
    str
        The OIP datatype name.

    Raises
    ------
    KeyError
        A dtype with no OIP equivalent (e.g. complex numbers).
    """
    if dtype.kind in ("U", "S", "O"):
        return "BYTES"
    return _NUMPY_TO_DATATYPE[np.dtype(dtype.newbyteorder("="))]


def shape_matches(expected: Sequence[int], actual: Sequence[int]) -> bool:
    """Whether ``actual`` fits ``expected``: same rank, equal dims where not :data:`DYNAMIC`."""
    return len(expected) == len(actual) and all(
        e in (DYNAMIC, a) for e, a in zip(expected, actual, strict=True)
    )


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Name, OIP datatype and shape of a model input or output (``-1`` = variable dim)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def shape_text(self) -> str:
        """The shape as ``[-1, 4]`` for error messages."""
        return "[" + ", ".join(str(d) for d in self.shape) + "]"
