"""What the TensorFlow backends share: the lazy import and the dtype/shape mapping.

TensorFlow is imported on the first TensorFlow model load only, so the server starts (and
serves ONNX or TorchScript models) without it. Both backends run on the CPU.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from sedna.serving.errors import BackendError
from sedna.serving.tensors import DYNAMIC, TensorSpec, datatype_of

__all__ = ["CPU", "import_keras", "import_tensorflow", "spec_from", "to_datatype"]

CPU: Final = "/CPU:0"
"""The device every TensorFlow model is loaded on and run on."""

_INSTALL: Final = "pip install 'sedna[tensorflow]'"
_import_lock = threading.Lock()


def import_tensorflow() -> Any:
    """Import and return ``tensorflow`` (quiet C++ INFO logs unless the user chose a level).

    Raises
    ------
    BackendError
        TensorFlow is not installed.
    """
    with _import_lock:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        try:
            return importlib.import_module("tensorflow")
        except ImportError as exc:
            raise BackendError(
                f"TensorFlow models (SavedModel, .keras, .h5) need TensorFlow: {_INSTALL}"
            ) from exc


def import_keras() -> Any:
    """Import and return Keras 3 on the TensorFlow backend (unless ``KERAS_BACKEND`` says else).

    Raises
    ------
    BackendError
        TensorFlow or Keras is not installed.
    """
    import_tensorflow()
    with _import_lock:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        try:
            return importlib.import_module("keras")
        except ImportError as exc:
            raise BackendError(f"Keras models (.keras, .h5) need Keras 3: {_INSTALL}") from exc


def to_datatype(dtype: Any, where: str) -> str:
    """The OIP datatype of a TensorFlow ``DType``, a Keras dtype name or a NumPy dtype.

    Raises
    ------
    BackendError
        A dtype with no OIP equivalent (e.g. ``bfloat16``, ``resource``, ``variant``).
    """
    name = getattr(dtype, "name", str(dtype))
    if name == "string":
        return "BYTES"
    try:
        numpy_type = getattr(dtype, "as_numpy_dtype", None)
        return datatype_of(np.dtype(numpy_type if numpy_type is not None else name))
    except (KeyError, TypeError, ValueError):
        raise BackendError(f"{where} has unsupported dtype {name}") from None


def spec_from(name: str, dtype: Any, shape: Sequence[int | None] | None, where: str) -> TensorSpec:
    """A :class:`TensorSpec` from a TensorFlow/Keras dtype and shape (``None`` dims → -1).

    Raises
    ------
    BackendError
        Unsupported dtype, or a tensor of unknown rank (OIP metadata needs a rank).
    """
    if shape is None:
        raise BackendError(f"{where} has an unknown rank; OIP metadata needs a fixed rank")
    dims = tuple(DYNAMIC if d is None else int(d) for d in shape)
    return TensorSpec(name=name, datatype=to_datatype(dtype, where), shape=dims)
