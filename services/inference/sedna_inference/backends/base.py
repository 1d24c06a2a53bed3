"""The backend port: what the core needs from a model runtime (ONNX Runtime, ...)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from sedna_inference.errors import BackendError
from sedna_inference.tensors import TensorSpec

__all__ = ["Backend", "BackendLoader", "BackendMetadata", "load_backend", "register_backend"]


@dataclass(frozen=True, slots=True)
class BackendMetadata:
    """What a loaded model declares: its platform and its input and output tensors."""

    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


class Backend(Protocol):
    """A loaded model that runs one (possibly batched) inference synchronously.

    ``infer`` is called from a worker thread, one call at a time per model.
    """

    def metadata(self) -> BackendMetadata:
        """Return the model's platform and tensor metadata."""
        ...

    def infer(
        self, inputs: Mapping[str, npt.NDArray[np.generic]]
    ) -> dict[str, npt.NDArray[np.generic]]:
        """Run the model on ``inputs`` (name → array) and return every output by name."""
        ...


BackendLoader = Callable[[Path], Backend]
"""``load(path) -> Backend``: reads a model file and returns it ready to run."""

_LOADERS: dict[str, BackendLoader] = {}


def register_backend(suffix: str, loader: BackendLoader) -> None:
    """Make :func:`load_backend` use ``loader`` for files ending in ``suffix`` (e.g. ``.onnx``)."""
    _LOADERS[suffix.lower()] = loader


def load_backend(path: Path) -> Backend:
    """Load ``path`` with the backend registered for its file suffix.

    Parameters
    ----------
    path
        A local model file.

    Returns
    -------
    Backend
        The loaded model.

    Raises
    ------
    BackendError
        No backend for the suffix, a missing file, or the backend failed to load it.
    """
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None:
        known = ", ".join(sorted(_LOADERS)) or "none"
        raise BackendError(f"no backend for model file {path.name!r} (known suffixes: {known})")
    if not path.is_file():
        raise BackendError(f"model file {str(path)!r} does not exist")
    return loader(path)
