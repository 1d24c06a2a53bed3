"""The model repository: the transport-agnostic core of the inference server.

It knows which models are configured, loads them through the backend port, validates
request tensors against each model's metadata and runs them through the model's
:class:`~sedna_inference.batcher.DynamicBatcher`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sedna_inference.backends import BackendLoader, BackendMetadata, load_backend
from sedna_inference.backends.base import Backend
from sedna_inference.batcher import DynamicBatcher, Tensors
from sedna_inference.errors import (
    BackendError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
)
from sedna_inference.metrics import InferenceMetrics
from sedna_inference.tensors import DYNAMIC, TensorSpec, shape_matches

__all__ = [
    "InputTensor",
    "ModelConfig",
    "ModelMetadata",
    "ModelRepository",
    "ModelState",
    "OutputTensor",
    "ServedModel",
]

_log = logging.getLogger(__name__)


class ModelState(enum.Enum):
    """Where a configured model is in its life."""

    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """A model the server is asked to serve.

    Attributes
    ----------
    name
        Name clients use (``model_name``).
    path
        Local model file; its suffix picks the backend.
    version
        The one version served.
    max_batch_size
        Most requests per backend call; 1 turns dynamic batching off.
    max_queue_delay_ms
        Longest a batch waits for more requests.
    """

    name: str
    path: Path
    version: str = "1"
    max_batch_size: int = 1
    max_queue_delay_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What ModelMetadata reports."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True, slots=True)
class InputTensor:
    """A decoded request input: the declared name, datatype and shape, and its data."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: npt.NDArray[np.generic]


@dataclass(frozen=True, slots=True)
class OutputTensor:
    """One output of a response."""

    spec: TensorSpec
    data: npt.NDArray[np.generic]


def _batchable(meta: BackendMetadata) -> bool:
    tensors = (*meta.inputs, *meta.outputs)
    return bool(meta.inputs) and all(t.shape and t.shape[0] == DYNAMIC for t in tensors)


class ServedModel:
    """A loaded model: its backend, metadata and batcher."""

    def __init__(self, config: ModelConfig, backend: Backend, metrics: InferenceMetrics) -> None:
        self.config = config
        self.backend = backend
        meta = backend.metadata()
        self.metadata = ModelMetadata(
            name=config.name,
            versions=(config.version,),
            platform=meta.platform,
            inputs=meta.inputs,
            outputs=meta.outputs,
        )
        self._inputs = {t.name: t for t in meta.inputs}
        self._outputs = {t.name: t for t in meta.outputs}
        self.batcher = DynamicBatcher(
            config.name,
            backend,
            metrics,
            max_batch_size=config.max_batch_size,
            max_queue_delay_ms=config.max_queue_delay_ms,
            batchable=_batchable(meta),
        )

    def validate(self, inputs: Sequence[InputTensor]) -> Tensors:
        """Check the request tensors against the model's inputs.

        Parameters
        ----------
        inputs
            Decoded request inputs.

        Returns
        -------
        dict of str to numpy.ndarray
            The arrays by input name.

        Raises
        ------
        InvalidInputError
            An unknown, duplicate or missing input, or a wrong datatype or shape; the
            message names the input and what was expected.
        """
        model = self.config.name
        arrays: Tensors = {}
        for tensor in inputs:
            spec = self._inputs.get(tensor.name)
            if spec is None:
                expected = ", ".join(repr(n) for n in self._inputs)
                raise InvalidInputError(
                    f"unknown input {tensor.name!r} for model {model!r}; expected inputs: "
                    f"{expected}"
                )
            if tensor.name in arrays:
                raise InvalidInputError(f"input {tensor.name!r} is given more than once")
            if tensor.datatype != spec.datatype:
                raise InvalidInputError(
                    f"input {tensor.name!r} has datatype {tensor.datatype}, expected "
                    f"{spec.datatype}"
                )
            if not shape_matches(spec.shape, tensor.shape):
                raise InvalidInputError(
                    f"input {tensor.name!r} has shape {list(tensor.shape)}, expected "
                    f"{spec.shape_text} (-1: any size)"
                )
            arrays[tensor.name] = tensor.data
        missing = [n for n in self._inputs if n not in arrays]
        if missing:
            spec = self._inputs[missing[0]]
            raise InvalidInputError(
                f"missing input {spec.name!r} ({spec.datatype} {spec.shape_text}) for model "
                f"{model!r}"
            )
        return arrays

    async def infer(
        self, inputs: Sequence[InputTensor], requested: Sequence[str] = ()
    ) -> list[OutputTensor]:
        """Validate, run through the batcher and return the outputs.

        Parameters
        ----------
        inputs
            Decoded request inputs.
        requested
            Output names to return; empty returns every output.

        Returns
        -------
        list of OutputTensor
            In the requested order, or the model's output order.

        Raises
        ------
        InvalidInputError
            Bad inputs, or an unknown requested output.
        BackendError
            The backend failed.
        """
        for name in requested:
            if name not in self._outputs:
                expected = ", ".join(repr(n) for n in self._outputs)
                raise InvalidInputError(
                    f"unknown requested output {name!r}; model {self.config.name!r} has "
                    f"outputs: {expected}"
                )
        arrays = self.validate(inputs)
        results = await self.batcher.submit(arrays)
        names = list(requested) or list(self._outputs)
        outputs = []
        for name in names:
            if name not in results:
                raise BackendError(f"backend returned no output {name!r}")
            outputs.append(OutputTensor(self._outputs[name], results[name]))
        return outputs


class ModelRepository:
    """Configured models by name, loaded through a backend loader.

    Parameters
    ----------
    metrics
        The server's inference metrics.
    loader
        ``load(path) -> Backend``; by default chosen by file suffix.
    """

    def __init__(self, metrics: InferenceMetrics, loader: BackendLoader = load_backend) -> None:
        self.metrics = metrics
        self._loader = loader
        self._configs: dict[str, ModelConfig] = {}
        self._states: dict[str, ModelState] = {}
        self._models: dict[str, ServedModel] = {}
        self._errors: dict[str, str] = {}

    def configure(self, config: ModelConfig) -> None:
        """Add a model to serve (not loaded yet: the server is not ready until it is)."""
        if config.name in self._configs:
            raise ValueError(f"model {config.name!r} is already configured")
        self._configs[config.name] = config
        self._states[config.name] = ModelState.LOADING

    @property
    def names(self) -> tuple[str, ...]:
        """The configured model names."""
        return tuple(self._configs)

    def state(self, name: str) -> ModelState:
        """The state of a configured model; :class:`ModelNotFoundError` if unknown."""
        if name not in self._states:
            raise ModelNotFoundError(f"unknown model {name!r}")
        return self._states[name]

    async def load(self, name: str) -> ServedModel:
        """Load a configured model in a worker thread and start its batcher.

        Raises
        ------
        ModelNotFoundError
            ``name`` is not configured.
        BackendError
            Loading failed; the model stays FAILED.
        """
        config = self._configs.get(name)
        if config is None:
            raise ModelNotFoundError(f"unknown model {name!r}")
        try:
            backend = await asyncio.to_thread(self._loader, config.path)
            model = ServedModel(config, backend, self.metrics)
        except Exception as exc:
            self._states[name] = ModelState.FAILED
            self._errors[name] = str(exc)
            if isinstance(exc, BackendError):
                raise
            raise BackendError(f"cannot load model {name!r}: {exc}") from exc
        model.batcher.start()
        self._models[name] = model
        self._states[name] = ModelState.READY
        _log.info(
            "model loaded",
            extra={
                "model": name,
                "version": config.version,
                "platform": model.metadata.platform,
                "max_batch_size": model.batcher.max_batch_size,
            },
        )
        return model

    async def load_all(self) -> bool:
        """Load every configured model; failures are logged. True when all loaded."""
        ok = True
        for name in self._configs:
            try:
                await self.load(name)
            except BackendError as exc:
                _log.error("model failed to load: %s", exc, extra={"model": name})
                ok = False
        return ok

    def server_ready(self) -> bool:
        """True when every configured model is loaded."""
        return all(state is ModelState.READY for state in self._states.values())

    def model_ready(self, name: str, version: str = "") -> bool:
        """Whether the model (and version, if given) is loaded; NOT_FOUND if unknown."""
        self._config(name, version)
        return self._states[name] is ModelState.READY

    def _config(self, name: str, version: str) -> ModelConfig:
        config = self._configs.get(name)
        if config is None:
            raise ModelNotFoundError(f"unknown model {name!r}")
        if version and version != config.version:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version!r}; served: {config.version!r}"
            )
        return config

    def get(self, name: str, version: str = "") -> ServedModel:
        """The loaded model.

        Raises
        ------
        ModelNotFoundError
            Unknown model or version.
        ModelNotReadyError
            Configured but not loaded (yet, or it failed).
        """
        self._config(name, version)
        model = self._models.get(name)
        if model is None:
            reason = self._errors.get(name)
            detail = f"failed to load: {reason}" if reason else "is still loading"
            raise ModelNotReadyError(f"model {name!r} {detail}")
        return model

    async def close(self) -> None:
        """Stop every batcher."""
        for model in self._models.values():
            await model.batcher.stop()
