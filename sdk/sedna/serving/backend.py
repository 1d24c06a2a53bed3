"""The backend port: what the serving core needs from a model runtime.

A backend is a loaded model (ONNX Runtime session, TorchScript module, a user estimator...)
that declares its tensors and runs one, possibly batched, inference synchronously.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from sedna.serving.tensors import TensorSpec

__all__ = ["Backend", "BackendMetadata"]


@dataclass(frozen=True, slots=True)
class BackendMetadata:
    """What a loaded model declares: its platform and its input and output tensors.

    A model that declares no inputs accepts any inputs as sent (no validation, no batch
    dimension known to clients); one that declares no outputs returns whatever its backend
    returns, typed by the arrays themselves.
    """

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
