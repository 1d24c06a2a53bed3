"""TensorFlow SavedModel backend: a directory holding ``saved_model.pb``, run on the CPU.

The model is loaded with ``tf.saved_model.load`` and served through one signature: the
``serving_default`` signature, or the only one when there is a single signature. The
signature's input ``TensorSpec`` s (its keyword arguments) and outputs (its output
dictionary) are the model's OIP inputs and outputs, each sorted by name (a SignatureDef's
tensors are maps, with no order of their own); unknown dims become ``-1``. ``tensorflow``
is imported only when such a model is loaded.

TensorFlow 1 frozen graphs (a ``.pb`` file other than ``saved_model.pb``) are not supported:
they declare no inputs and outputs; export a SavedModel instead.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sedna.serving.errors import BackendError
from sedna.serving.tensors import TensorSpec
from sedna_inference.backends._tf import CPU, import_tensorflow, spec_from
from sedna_inference.backends.base import BackendMetadata, RuntimeOptions

__all__ = ["SAVED_MODEL_MARKER", "SavedModelBackend", "load_pb", "load_saved_model"]

SAVED_MODEL_MARKER: Final = "saved_model.pb"
"""The file that makes a directory a SavedModel."""

SERVING_SIGNATURE: Final = "serving_default"
PLATFORM: Final = "tensorflow_savedmodel"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _signature(loaded: Any, directory: Path) -> tuple[str, Any]:
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if SERVING_SIGNATURE in signatures:
        return SERVING_SIGNATURE, signatures[SERVING_SIGNATURE]
    if len(signatures) == 1:
        return next(iter(signatures.items()))
    listed = ", ".join(sorted(signatures)) or "none"
    raise BackendError(
        f"SavedModel {directory.name!r} has no {SERVING_SIGNATURE!r} signature to serve "
        f"(signatures: {listed})"
    )


def _shape(spec: Any) -> list[int | None] | None:
    shape = spec.shape
    return None if shape.rank is None else list(shape.as_list())


def _input_specs(signature: Any, name: str) -> tuple[TensorSpec, ...]:
    args, kwargs = signature.structured_input_signature
    if args:
        raise BackendError(f"signature {name!r} takes positional inputs; expected named inputs")
    specs = []
    for key, spec in sorted(kwargs.items()):
        where = f"input {key!r} of signature {name!r}"
        if not hasattr(spec, "dtype") or not hasattr(spec, "shape"):
            raise BackendError(f"{where} is not a dense tensor ({type(spec).__name__})")
        specs.append(spec_from(key, spec.dtype, _shape(spec), where))
    if not specs:
        raise BackendError(f"signature {name!r} declares no inputs")
    return tuple(specs)


def _output_specs(signature: Any, name: str) -> tuple[TensorSpec, ...]:
    outputs = signature.structured_outputs
    if not isinstance(outputs, Mapping) or not outputs:
        raise BackendError(f"signature {name!r} declares no named outputs")
    specs = []
    for key, spec in sorted(outputs.items()):
        where = f"output {key!r} of signature {name!r}"
        if not hasattr(spec, "dtype") or not hasattr(spec, "shape"):
            raise BackendError(f"{where} is not a dense tensor ({type(spec).__name__})")
        specs.append(spec_from(str(key), spec.dtype, _shape(spec), where))
    return tuple(specs)


class SavedModelBackend:
    """A SavedModel's serving signature, run eagerly on the CPU, one call at a time.

    Parameters
    ----------
    directory
        The SavedModel directory (holding ``saved_model.pb`` and ``variables/``).
    """

    def __init__(self, directory: Path) -> None:
        tf = import_tensorflow()
        self._tf = tf
        try:
            with tf.device(CPU):
                self._loaded = tf.saved_model.load(str(directory))
        except Exception as exc:  # TensorFlow raises its own untyped errors
            raise BackendError(
                f"TensorFlow cannot load SavedModel {directory.name!r}: {_first_line(exc)}"
            ) from exc
        name, self._signature = _signature(self._loaded, directory)
        self._metadata = BackendMetadata(
            platform=PLATFORM,
            inputs=_input_specs(self._signature, name),
            outputs=_output_specs(self._signature, name),
        )
        self._lock = threading.Lock()

    def metadata(self) -> BackendMetadata:
        """Return the platform (``tensorflow_savedmodel``) and the signature's tensors."""
        return self._metadata

    def infer(
        self, inputs: Mapping[str, npt.NDArray[np.generic]]
    ) -> dict[str, npt.NDArray[np.generic]]:
        """Call the signature with the inputs by name; return its outputs by name."""
        tf = self._tf
        with self._lock, tf.device(CPU):
            feeds = {spec.name: tf.constant(inputs[spec.name]) for spec in self._metadata.inputs}
            try:
                results = self._signature(**feeds)
            except Exception as exc:  # e.g. InvalidArgumentError from a kernel
                raise BackendError(f"TensorFlow failed: {_first_line(exc)}") from exc
            outputs: dict[str, npt.NDArray[np.generic]] = {}
            for spec in self._metadata.outputs:
                value = results.get(spec.name)
                if value is None:
                    raise BackendError(f"signature returned no output {spec.name!r}")
                outputs[spec.name] = np.asarray(value.numpy())
        return outputs


def _saved_model_dir(path: Path) -> Path:
    if path.is_dir():
        return path
    if path.name == SAVED_MODEL_MARKER:
        return path.parent
    raise BackendError(
        f"{path.name!r} is not a SavedModel: a SavedModel is a directory holding "
        f"{SAVED_MODEL_MARKER} (TensorFlow 1 frozen graphs are not supported; export a "
        "SavedModel with tf.saved_model.save or Keras model.export)"
    )


def load_saved_model(path: Path, options: RuntimeOptions | None = None) -> SavedModelBackend:
    """:data:`~sedna_inference.backends.base.BackendLoader` for SavedModel directories.

    ``path`` may also be the directory's ``saved_model.pb`` file. ``options`` are not used:
    TensorFlow's thread pools are process-wide.
    """
    return SavedModelBackend(_saved_model_dir(path))


load_pb = load_saved_model
"""The loader for ``.pb`` files: ``saved_model.pb`` loads its directory, others fail clearly."""
