"""ONNX Runtime backend (ours, not upstream), ``BACKEND_TYPE=ONNX``.

With no estimator, or one without a ``predict`` of its own, the backend serves an ``.onnx``
file itself: :meth:`ONNXBackend.load` opens it with ONNX Runtime (``MODEL_URL`` by default;
local, ``file://``, ``s3://`` or ``http(s)://``) and :meth:`ONNXBackend.predict` runs it on
numpy input. So a worker needs no estimator class at all::

    JointInference(estimator=None)   # BACKEND_TYPE=ONNX, MODEL_URL=/models/little.onnx

An estimator with its own ``predict`` is used as with the base backend. Importing this module
imports ``onnxruntime``; :func:`sedna.backend.set_backend` does so only when it is chosen.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import onnxruntime as ort  # type: ignore[import-untyped,unused-ignore]

from sedna.backend.base import BackendBase

__all__ = ["ONNXBackend"]

_log = logging.getLogger(__name__)

_DTYPES: Final[dict[str, Any]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


class ONNXBackend(BackendBase):
    """ONNX Runtime backend.

    Parameters
    ----------
    estimator : class, factory, instance or None
        None (or an estimator without ``predict``) to run the ``.onnx`` model directly.
    fine_tune : bool, default True
        See :class:`~sedna.backend.base.BackendBase`.
    **kwargs
        See :class:`~sedna.backend.base.BackendBase`; ``use_cuda`` prefers the CUDA
        execution provider when ONNX Runtime has it.

    Attributes
    ----------
    session : onnxruntime.InferenceSession or None
        The loaded model (direct mode).
    """

    def __init__(self, estimator: Any = None, fine_tune: bool = True, **kwargs: Any) -> None:
        super().__init__(estimator=estimator, fine_tune=fine_tune, **kwargs)
        self.framework = "onnx"
        self.session: Any = None

    @property
    def direct(self) -> bool:
        """Whether the backend runs the ``.onnx`` file itself (no estimator ``predict``)."""
        return self.estimator is None or not callable(getattr(self.estimator, "predict", None))

    def _providers(self) -> list[str]:
        available = ort.get_available_providers()
        wanted = ["CUDAExecutionProvider"] if self.use_cuda else []
        return [p for p in wanted if p in available] + ["CPUExecutionProvider"]

    def _load_local(self, path: str) -> Any:
        if not self.direct:
            return super()._load_local(path)
        if os.path.isdir(path):
            raise FileNotFoundError(f"{path} is a directory, not an .onnx model file")
        self.session = ort.InferenceSession(path, providers=self._providers())
        _log.info(
            "loaded ONNX model %s (inputs %s)", path, [i.name for i in self.session.get_inputs()]
        )
        return self.session

    def load(self, model_url: str = "", model_name: str | None = None, **kwargs: Any) -> Any:
        """Fetch and open the model (see :meth:`BackendBase.load`).

        Raises
        ------
        FileNotFoundError
            In direct mode, if the model file does not exist (an estimator-less backend has
            nothing else to run).
        """
        result = super().load(model_url, model_name, **kwargs)
        if self.direct and self.session is None:
            raise FileNotFoundError(
                f"ONNX model {model_url or self.model_save_path!r} not found "
                "(set MODEL_URL to an .onnx file)"
            )
        return result

    def predict(self, data: Any, **kwargs: Any) -> Any:
        """Run the model on ``data`` (direct mode) or call the estimator's ``predict``.

        Parameters
        ----------
        data : array_like or Mapping[str, array_like]
            One input: an array, cast to the input's dtype; a leading batch dimension of 1
            is added when it has one dimension less than the input (and removed from the
            outputs). Several inputs: a mapping from input name to array.
        **kwargs
            Passed to the estimator's ``predict`` (estimator mode only).

        Returns
        -------
        numpy.ndarray or dict
            The single output, or ``{name: array}`` for several outputs.
        """
        if not self.direct:
            return super().predict(data, **kwargs)
        if self.session is None:
            self.load()
        inputs = self.session.get_inputs()
        added_batch = False
        if isinstance(data, Mapping):
            feed = {i.name: self._cast(data[i.name], i.type) for i in inputs if i.name in data}
            missing = [i.name for i in inputs if i.name not in data]
            if missing:
                raise ValueError(f"missing model input(s) {missing}")
        else:
            if len(inputs) != 1:
                raise ValueError(
                    f"the model has {len(inputs)} inputs {[i.name for i in inputs]}; "
                    "pass a mapping from input name to array"
                )
            spec = inputs[0]
            array = self._cast(data, spec.type)
            rank = len(spec.shape) if spec.shape is not None else None
            if rank is not None and array.ndim == rank - 1:
                array = array[np.newaxis, ...]
                added_batch = True
            feed = {spec.name: array}
        outputs = self.session.run(None, feed)
        if added_batch:
            outputs = [out[0] if getattr(out, "ndim", 0) > 0 else out for out in outputs]
        names = [o.name for o in self.session.get_outputs()]
        if len(outputs) == 1:
            return outputs[0]
        return dict(zip(names, outputs, strict=True))

    @staticmethod
    def _cast(data: Any, onnx_type: str) -> np.ndarray[Any, Any]:
        dtype = _DTYPES.get(onnx_type)
        array = np.asarray(data)
        if dtype is not None and array.dtype != dtype:
            array = array.astype(dtype)
        return array

    def _save_local(self, path: str) -> None:
        if not self.direct:
            super()._save_local(path)
            return
        if not self.model_path:
            raise ValueError("no ONNX model is loaded: nothing to save")
        if os.path.abspath(self.model_path) != os.path.abspath(path):
            shutil.copyfile(self.model_path, path)
