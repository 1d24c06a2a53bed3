"""Keras backend: ``.keras`` (Keras 3) and ``.h5``/``.hdf5`` (legacy HDF5) model files.

The model is loaded with ``keras.saving.load_model(path, compile=False, safe_mode=True)``
(so a file carrying Python lambdas is refused, as Keras refuses it by default) and run with
``predict_on_batch`` on the CPU. Tensor names follow the model's structure:

- inputs: the keys of a dict-structured input, else each ``keras.Input``'s name;
- outputs: the keys of a dict-structured output, else the names of the output layers
  (``model.output_names``, or the layer that produced each output of a ``Sequential``);
  ``output_<i>`` when those are not unique.

Shapes and dtypes come from ``model.inputs``/``model.outputs`` (``None`` dims → ``-1``). The
model needs defined inputs: a functional or ``Sequential`` model built with ``keras.Input``
(a subclassed model should be exported as a SavedModel instead). Keras picks the format by
file name, so a file without one of these suffixes (loaded by ``model_format``) is told
apart by its first bytes (zip: ``.keras``; HDF5: ``.h5``).
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sedna.serving.errors import BackendError
from sedna.serving.tensors import TensorSpec
from sedna_inference.backends._tf import CPU, import_keras, import_tensorflow, spec_from
from sedna_inference.backends.base import BackendMetadata, RuntimeOptions

__all__ = ["KERAS_SUFFIXES", "KerasBackend", "load_keras"]

PLATFORM: Final = "tensorflow_keras"
KERAS_SUFFIXES: Final = (".keras", ".h5", ".hdf5")
_ZIP_MAGIC: Final = b"PK\x03\x04"
_HDF5_MAGIC: Final = b"\x89HDF\r\n\x1a\n"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _shape(tensor: Any) -> Sequence[int | None] | None:
    shape = getattr(tensor, "shape", None)
    return None if shape is None else tuple(shape)


def _specs(
    structure: Any, names: Sequence[str] | None, kind: str
) -> tuple[tuple[TensorSpec, ...], bool]:
    """Specs of a Keras input/output structure; and whether it is a dict (fed/read by key)."""
    if isinstance(structure, Mapping):
        items = [(str(key), tensor) for key, tensor in structure.items()]
        keyed = True
    else:
        tensors = list(structure) if isinstance(structure, (list, tuple)) else [structure]
        given = list(names) if names is not None else [getattr(t, "name", "") for t in tensors]
        if len(given) != len(tensors) or len(set(given)) != len(given) or not all(given):
            given = [f"{kind}_{i}" for i in range(len(tensors))]
        items = list(zip(given, tensors, strict=True))
        keyed = False
    specs = []
    for name, tensor in items:
        if isinstance(tensor, (Mapping, list, tuple)):
            raise BackendError(f"Keras model has a nested {kind} structure; expected flat tensors")
        specs.append(spec_from(name, tensor.dtype, _shape(tensor), f"{kind} {name!r}"))
    if len({s.name for s in specs}) != len(specs):
        raise BackendError(f"Keras model has duplicate {kind} names")
    return tuple(specs), keyed


def _output_names(model: Any, outputs: Any) -> list[str]:
    """The output layers' names: ``model.output_names``, else each output's producing layer."""
    tensors = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    names = list(getattr(model, "output_names", None) or [])
    if len(names) == len(tensors):
        return [str(n) for n in names]
    layers = [getattr(getattr(t, "_keras_history", None), "operation", None) for t in tensors]
    return [str(getattr(layer, "name", "") or "") for layer in layers]


@contextlib.contextmanager
def _named_for_keras(path: Path) -> Iterator[Path]:
    """``path``, or a link to it named ``.keras``/``.h5`` by its content (Keras goes by name)."""
    if path.suffix.lower() in KERAS_SUFFIXES:
        yield path
        return
    with path.open("rb") as file:
        magic = file.read(8)
    if magic.startswith(_ZIP_MAGIC):
        suffix = ".keras"
    elif magic.startswith(_HDF5_MAGIC):
        suffix = ".h5"
    else:
        raise BackendError(f"{path.name!r} is neither a .keras (zip) nor an HDF5 Keras file")
    with tempfile.TemporaryDirectory(prefix="sedna-keras-") as folder:
        link = Path(folder, "model" + suffix)
        link.symlink_to(path.resolve())
        yield link


def _structure(model: Any, path: Path) -> tuple[Any, Any]:
    """The model's input and output structures (``model.input``/``output``, else the lists)."""
    try:
        return model.input, model.output
    except (AttributeError, ValueError):
        pass  # e.g. a Sequential model read from HDF5: only the flat lists are defined
    try:
        inputs, outputs = list(model.inputs or []), list(model.outputs or [])
    except (AttributeError, ValueError, TypeError):
        inputs, outputs = [], []
    if not inputs or not outputs:
        raise BackendError(
            f"Keras model {path.name!r} has no defined inputs/outputs (build it with "
            "keras.Input, or export a SavedModel with model.export)"
        )
    return inputs, outputs


class KerasBackend:
    """A Keras model file run with ``predict_on_batch`` on the CPU, one call at a time.

    Parameters
    ----------
    path
        The ``.keras``, ``.h5`` or ``.hdf5`` file.
    """

    def __init__(self, path: Path) -> None:
        keras = import_keras()
        self._tf = import_tensorflow()
        try:
            with _named_for_keras(path) as named, self._tf.device(CPU):
                model = keras.saving.load_model(str(named), compile=False, safe_mode=True)
        except BackendError:
            raise
        except Exception as exc:  # Keras raises ValueError, OSError, its own types
            raise BackendError(f"Keras cannot load {path.name!r}: {_first_line(exc)}") from exc
        inputs, outputs = _structure(model, path)
        self._model = model
        in_specs, self._keyed_inputs = _specs(inputs, None, "input")
        out_specs, self._keyed_outputs = _specs(outputs, _output_names(model, outputs), "output")
        self._metadata = BackendMetadata(platform=PLATFORM, inputs=in_specs, outputs=out_specs)
        self._lock = threading.Lock()

    def metadata(self) -> BackendMetadata:
        """Return the platform (``tensorflow_keras``) and the model's inputs and outputs."""
        return self._metadata

    def _feed(self, inputs: Mapping[str, npt.NDArray[np.generic]]) -> Any:
        specs = self._metadata.inputs
        if self._keyed_inputs:
            return {spec.name: inputs[spec.name] for spec in specs}
        if len(specs) == 1:
            return inputs[specs[0].name]
        return [inputs[spec.name] for spec in specs]

    def infer(
        self, inputs: Mapping[str, npt.NDArray[np.generic]]
    ) -> dict[str, npt.NDArray[np.generic]]:
        """Run ``predict_on_batch`` on the inputs; map the results to the output names."""
        with self._lock, self._tf.device(CPU):
            try:
                result = self._model.predict_on_batch(self._feed(inputs))
            except Exception as exc:  # Keras/TensorFlow errors
                raise BackendError(f"Keras failed: {_first_line(exc)}") from exc
        specs = self._metadata.outputs
        if self._keyed_outputs:
            if not isinstance(result, Mapping):
                raise BackendError(f"Keras model returned {type(result).__name__}, not a dict")
            values = [result.get(spec.name) for spec in specs]
        elif isinstance(result, (list, tuple)):
            values = list(result)
        else:
            values = [result]
        if len(values) != len(specs) or any(v is None for v in values):
            raise BackendError(
                f"Keras model returned {len(values)} value(s), expected {len(specs)} "
                f"({', '.join(repr(s.name) for s in specs)})"
            )
        return {spec.name: np.asarray(v) for spec, v in zip(specs, values, strict=True)}


def load_keras(path: Path, options: RuntimeOptions | None = None) -> KerasBackend:
    """:data:`~sedna_inference.backends.base.BackendLoader` for ``.keras``/``.h5`` files.

    ``options`` are not used: TensorFlow's thread pools are process-wide.
    """
    return KerasBackend(path)
