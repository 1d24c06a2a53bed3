"""ONNX Runtime backend (CPU execution provider)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sedna.serving.errors import BackendError
from sedna.serving.tensors import DYNAMIC, TensorSpec
from sedna_inference.backends.base import BackendMetadata, RuntimeOptions

__all__ = ["OnnxBackend", "load_onnx"]

_ORT_TO_DATATYPE: Final[dict[str, str]] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def _spec(arg: Any) -> TensorSpec:
    datatype = _ORT_TO_DATATYPE.get(arg.type)
    if datatype is None:
        raise BackendError(f"tensor {arg.name!r} has unsupported ONNX type {arg.type}")
    shape: Sequence[Any] = arg.shape or ()
    dims = tuple(d if isinstance(d, int) and d >= 0 else DYNAMIC for d in shape)
    return TensorSpec(name=arg.name, datatype=datatype, shape=dims)


class OnnxBackend:
    """An ONNX model in an ``onnxruntime.InferenceSession`` on the CPU.

    Parameters
    ----------
    path
        The ``.onnx`` file.
    intra_op_threads
        Threads ONNX Runtime uses inside one operator; 0 lets it choose (one per
        physical core).
    inter_op_threads
        Threads for independent operators (parallel execution mode only); 0 lets it
        choose.
    spinning
        Let idle intra-op threads spin-wait for work (ONNX Runtime's default); False sets
        ``session.intra_op.allow_spinning`` to ``0``.
    """

    def __init__(
        self,
        path: Path,
        *,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        spinning: bool = True,
    ) -> None:
        try:
            import onnxruntime as ort  # type: ignore[import-untyped]  # noqa: PLC0415
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise BackendError("ONNX models need onnxruntime: pip install 'sedna[onnx]'") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped exceptions
            raise BackendError(f"onnxruntime cannot load {path.name!r}: {exc}") from exc
        self._metadata = BackendMetadata(
            platform="onnxruntime_onnx",
            inputs=tuple(_spec(a) for a in self._session.get_inputs()),
            outputs=tuple(_spec(a) for a in self._session.get_outputs()),
        )
        self._output_names = [o.name for o in self._metadata.outputs]

    def metadata(self) -> BackendMetadata:
        """Return the platform (``onnxruntime_onnx``) and the graph's inputs and outputs."""
        return self._metadata

    def infer(
        self, inputs: Mapping[str, npt.NDArray[np.generic]]
    ) -> dict[str, npt.NDArray[np.generic]]:
        """Run the session on ``inputs`` and return every graph output by name."""
        results = self._session.run(self._output_names, dict(inputs))
        return {
            name: np.asarray(value) for name, value in zip(self._output_names, results, strict=True)
        }


def load_onnx(path: Path, options: RuntimeOptions | None = None) -> OnnxBackend:
    """:data:`~sedna_inference.backends.base.BackendLoader` for ``.onnx`` files."""
    opts = options if options is not None else RuntimeOptions()
    return OnnxBackend(
        path,
        intra_op_threads=opts.intra_op_threads,
        inter_op_threads=opts.inter_op_threads,
        spinning=opts.spinning,
    )
