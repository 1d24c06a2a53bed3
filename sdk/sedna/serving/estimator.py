"""Serving a user estimator (any ``predict(data)``) through the OIP core.

The result convention (what ``BigModelService`` answers): a numeric result (a NumPy array,
or anything :func:`numpy.asarray` turns into a bool, integer or float array) is one output
tensor ``result`` of that dtype and shape; anything else is JSON-encoded into a BYTES
output ``result`` with a single element and ``parameters["content_type"] =
"application/json"``.

With batching on, the estimator gets the requests' rows concatenated along axis 0 and must
return one result per row: a numeric array with that many rows, or a sequence of that
many results (each request then gets the JSON list of its rows' results).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sedna.serving.backend import BackendMetadata
from sedna.serving.convert import JSON_CONTENT_TYPE
from sedna.serving.errors import BackendError
from sedna.serving.model import OutputTensor
from sedna.serving.tensors import DATATYPE_TO_NUMPY, DYNAMIC, TensorSpec

__all__ = [
    "DEFAULT_INPUT_NAME",
    "RESULT_NAME",
    "EstimatorBackend",
    "encode_result",
    "input_spec",
    "result_array",
]

RESULT_NAME: Final = "result"
"""Name of the output of an estimator model."""

DEFAULT_INPUT_NAME: Final = "data"
"""Name of the declared input of an estimator model."""

_NUMERIC_KINDS: Final = frozenset("biuf")

Predict = Callable[[Any], Any]
"""``predict(data) -> result``: the estimator call, with post-processing."""


def input_spec(shape: str | None, datatype: str | None) -> TensorSpec | None:
    """The declared input of an estimator model, from text settings.

    Parameters
    ----------
    shape
        Comma-separated dimensions, ``-1`` for a variable one (``"-1,64"``; brackets and
        spaces allowed); None or blank declares no input (any input accepted as sent).
    datatype
        An OIP datatype (``FP32`` when None or blank).

    Returns
    -------
    TensorSpec or None
        The input ``data``, or None when ``shape`` is not given.

    Raises
    ------
    ValueError
        A malformed shape, an unknown datatype, or a datatype without a shape.
    """
    text = (shape or "").strip().strip("[]()").strip()
    kind = (datatype or "").strip().upper()
    if not text:
        if kind:
            raise ValueError("an input datatype needs an input shape too (e.g. -1,64)")
        return None
    try:
        dims = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"input shape {shape!r} is not comma-separated integers") from None
    if any(d < DYNAMIC or d == 0 for d in dims):
        raise ValueError(f"input shape {shape!r}: dimensions must be positive or -1")
    kind = kind or "FP32"
    if kind not in DATATYPE_TO_NUMPY:
        raise ValueError(f"unknown input datatype {kind!r}; known: {', '.join(DATATYPE_TO_NUMPY)}")
    return TensorSpec(DEFAULT_INPUT_NAME, kind, dims)


def _numeric(result: Any) -> npt.NDArray[np.generic] | None:
    if isinstance(result, np.ndarray):
        return result if result.dtype.kind in _NUMERIC_KINDS else None
    try:
        array = np.asarray(result)
    except (ValueError, TypeError):  # ragged sequences, odd objects
        return None
    return array if array.dtype.kind in _NUMERIC_KINDS else None


def result_array(result: Any, rows: int | None = None) -> npt.NDArray[np.generic]:
    """The backend output for an estimator result.

    Parameters
    ----------
    result
        What the estimator returned.
    rows
        With batching, the number of rows the estimator got; None without batching.

    Returns
    -------
    numpy.ndarray
        A numeric array as is; otherwise an object array holding the result (0-d), or one
        result per row (``(rows,)``) with batching. :func:`encode_result` JSON-encodes it.

    Raises
    ------
    BackendError
        With batching, a non-numeric result that is not a sequence of ``rows`` results.
    """
    numeric = _numeric(result)
    if numeric is not None:
        return numeric
    if rows is None:
        holder = np.empty((), dtype=np.object_)
        holder[()] = result
        return holder
    if not isinstance(result, list | tuple | np.ndarray) or len(result) != rows:
        raise BackendError(
            f"the estimator returned {type(result).__name__} for a batch of {rows} rows; with "
            "batching on it must return one result per row"
        )
    per_row = np.empty(rows, dtype=np.object_)
    for index, item in enumerate(result):
        per_row[index] = item
    return per_row


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode_result(output: OutputTensor) -> OutputTensor:
    """JSON-encode a non-numeric estimator result (an :class:`OutputEncoder`).

    Numeric outputs pass unchanged. An object output becomes a BYTES ``[1]`` tensor holding
    one JSON document (the result, or the list of a request's per-row results) with
    ``content_type`` ``application/json``.

    Raises
    ------
    BackendError
        The result is not JSON serialisable.
    """
    data = output.data
    if data.dtype.kind != "O":
        return output
    document = data[()] if data.ndim == 0 else data.tolist()
    try:
        payload = json.dumps(document, default=_json_default).encode()
    except (TypeError, ValueError) as exc:
        raise BackendError(f"the estimator's result cannot be sent as JSON: {exc}") from exc
    holder = np.empty(1, dtype=np.object_)
    holder[0] = payload
    spec = TensorSpec(output.spec.name, "BYTES", (1,))
    return OutputTensor(spec, holder, JSON_CONTENT_TYPE)


class EstimatorBackend:
    """A :class:`~sedna.serving.backend.Backend` that calls ``predict(data)``.

    Parameters
    ----------
    predict
        The estimator call; runs in a worker thread, one call at a time.
    spec
        The declared input, or None to accept any inputs as sent.
    batched
        Whether the batcher may concatenate requests (the estimator takes batches).
    platform
        What ModelMetadata reports as the platform.

    Notes
    -----
    ``predict`` gets the single input's array (writable), or a dict name → array when a
    request has several inputs (possible only without a declared input).
    """

    def __init__(
        self,
        predict: Predict,
        spec: TensorSpec | None = None,
        *,
        batched: bool = False,
        platform: str = "sedna_estimator",
    ) -> None:
        if batched and (spec is None or not spec.shape or spec.shape[0] != DYNAMIC):
            raise ValueError("batching needs a declared input with a variable first dimension")
        self._predict = predict
        self._spec = spec
        self._batched = batched
        self._platform = platform

    def metadata(self) -> BackendMetadata:
        """The declared input (if any); outputs are not declared (typed by the result)."""
        inputs = (self._spec,) if self._spec is not None else ()
        return BackendMetadata(self._platform, inputs, ())

    def infer(
        self, inputs: Mapping[str, npt.NDArray[np.generic]]
    ) -> dict[str, npt.NDArray[np.generic]]:
        """Call the estimator and return its result as the output ``result``."""
        arrays = {
            name: array if array.flags.writeable else array.copy() for name, array in inputs.items()
        }
        data: Any = next(iter(arrays.values())) if len(arrays) == 1 else arrays
        rows = int(data.shape[0]) if self._batched and isinstance(data, np.ndarray) else None
        result = self._predict(data)
        return {RESULT_NAME: result_array(result, rows)}
