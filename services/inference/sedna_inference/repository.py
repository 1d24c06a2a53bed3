"""The model repository: the transport-agnostic core of the inference server.

It knows which models are configured, loads them through the backend port, validates
request tensors against each model's metadata and runs them through the model's
:class:`~sedna_inference.batcher.DynamicBatcher`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
from sedna_inference.sources import FetchedModel, ModelSource, ModelSourceError, open_source
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
        Local model file (a :class:`~pathlib.Path` or a string), or an ``s3://bucket/key`` or
        ``http(s)://`` URL downloaded to the repository's cache directory; the file suffix
        picks the backend.
    version
        The one version served.
    max_batch_size
        Most requests per backend call; 1 turns dynamic batching off.
    max_queue_delay_ms
        Longest a batch waits for more requests.
    reload_interval_s
        How often :meth:`ModelRepository.watch` polls the source for a new version; 0 never.
    """

    name: str
    path: Path | str
    version: str = "1"
    max_batch_size: int = 1
    max_queue_delay_ms: float = 0.0
    reload_interval_s: float = 0.0


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


DEFAULT_CACHE_DIR = Path(tempfile.gettempdir()) / "sedna-inference-models"
"""Where remote models are downloaded unless the repository is given another directory."""


class ModelRepository:
    """Configured models by name, loaded through a backend loader and hot-reloaded.

    Parameters
    ----------
    metrics
        The server's inference metrics.
    loader
        ``load(path) -> Backend``; by default chosen by file suffix.
    cache_dir
        Where ``s3://`` and ``http(s)://`` models are downloaded.
    environ
        Where S3 credentials are read (``os.environ`` by default; see
        :class:`~sedna_inference.sources.S3Source`).
    """

    def __init__(
        self,
        metrics: InferenceMetrics,
        loader: BackendLoader = load_backend,
        *,
        cache_dir: Path = DEFAULT_CACHE_DIR,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.metrics = metrics
        self._loader = loader
        self._cache_dir = cache_dir
        self._environ = environ
        self._configs: dict[str, ModelConfig] = {}
        self._states: dict[str, ModelState] = {}
        self._models: dict[str, ServedModel] = {}
        self._errors: dict[str, str] = {}
        self._sources: dict[str, ModelSource] = {}
        self._fetched: dict[str, FetchedModel] = {}
        self._seen: dict[str, str | None] = {}
        self._generations: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def configure(self, config: ModelConfig) -> None:
        """Add a model to serve (not loaded yet: the server is not ready until it is)."""
        if config.name in self._configs:
            raise ValueError(f"model {config.name!r} is already configured")
        self._configs[config.name] = config
        self._states[config.name] = ModelState.LOADING
        self._generations[config.name] = 0
        self._locks[config.name] = asyncio.Lock()

    @property
    def names(self) -> tuple[str, ...]:
        """The configured model names."""
        return tuple(self._configs)

    def state(self, name: str) -> ModelState:
        """The state of a configured model; :class:`ModelNotFoundError` if unknown."""
        if name not in self._states:
            raise ModelNotFoundError(f"unknown model {name!r}")
        return self._states[name]

    def generation(self, name: str) -> int:
        """How many times the model was loaded successfully (1 after the first load).

        Raises
        ------
        ModelNotFoundError
            ``name`` is not configured.
        """
        if name not in self._generations:
            raise ModelNotFoundError(f"unknown model {name!r}")
        return self._generations[name]

    def _source(self, config: ModelConfig) -> ModelSource:
        source = self._sources.get(config.name)
        if source is None:
            source = open_source(config.path, self._cache_dir, self._environ)
            self._sources[config.name] = source
        return source

    async def _build(self, config: ModelConfig) -> tuple[ServedModel, FetchedModel]:
        """Fetch and load a new instance of the model (not started, not served yet)."""
        source = self._source(config)
        fetched = await asyncio.to_thread(source.fetch)
        self._seen[config.name] = fetched.fingerprint
        try:
            backend = await asyncio.to_thread(self._loader, fetched.path)
            model = ServedModel(config, backend, self.metrics)
        except Exception as exc:
            if self._fetched.get(config.name) != fetched:
                source.discard(fetched)
            raise BackendError(
                f"cannot load model {config.name!r} from {source.url}: {exc}"
            ) from exc
        return model, fetched

    async def _swap(self, name: str, model: ServedModel, fetched: FetchedModel) -> None:
        """Serve ``model`` from now on; the old instance finishes its queue, then stops."""
        model.batcher.start()
        old = self._models.get(name)
        old_fetched = self._fetched.get(name)
        self._models[name] = model
        self._fetched[name] = fetched
        self._states[name] = ModelState.READY
        self._errors.pop(name, None)
        self._generations[name] += 1
        if old is not None:
            await old.batcher.drain()
        if old_fetched is not None and old_fetched.path != fetched.path:
            self._sources[name].discard(old_fetched)

    async def load(self, name: str) -> ServedModel:
        """Fetch the model, load it in a worker thread and start its batcher.

        Raises
        ------
        ModelNotFoundError
            ``name`` is not configured.
        BackendError
            Fetching or loading failed (the message names the location, never
            credentials); the model stays FAILED.
        """
        config = self._configs.get(name)
        if config is None:
            raise ModelNotFoundError(f"unknown model {name!r}")
        async with self._locks[name]:
            try:
                model, fetched = await self._build(config)
            except BackendError as exc:
                self._states[name] = ModelState.FAILED
                self._errors[name] = str(exc)
                raise
            except Exception as exc:  # pragma: no cover - sources raise ModelSourceError
                self._states[name] = ModelState.FAILED
                self._errors[name] = str(exc)
                raise BackendError(f"cannot load model {name!r}: {exc}") from exc
            await self._swap(name, model, fetched)
        _log.info(
            "model loaded",
            extra={
                "model": name,
                "version": config.version,
                "source": self._sources[name].url,
                "platform": model.metadata.platform,
                "max_batch_size": model.batcher.max_batch_size,
            },
        )
        return model

    async def reload(self, name: str) -> bool:
        """Load the model's current version in the background and swap it in atomically.

        Requests already queued on the old instance finish on it. On failure the old
        instance (if any) keeps serving and the error is logged. Either way
        ``sedna_inference_model_reloads_total{model,result}`` counts it.

        Returns
        -------
        bool
            Whether the new version now serves.

        Raises
        ------
        ModelNotFoundError
            ``name`` is not configured.
        """
        config = self._configs.get(name)
        if config is None:
            raise ModelNotFoundError(f"unknown model {name!r}")
        async with self._locks[name]:
            try:
                model, fetched = await self._build(config)
            except BackendError as exc:
                self.metrics.reloads.labels(model=name, result="error").inc()
                serving = (
                    "the previous version keeps serving"
                    if name in self._models
                    else ("the model stays not ready")
                )
                _log.error("model reload failed (%s): %s", serving, exc, extra={"model": name})
                if name not in self._models:
                    self._errors[name] = str(exc)
                return False
            await self._swap(name, model, fetched)
        self.metrics.reloads.labels(model=name, result="success").inc()
        _log.info(
            "model reloaded",
            extra={
                "model": name,
                "source": self._sources[name].url,
                "generation": self._generations[name],
            },
        )
        return True

    async def watch(
        self, name: str, on_change: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Poll the model's source every ``reload_interval_s`` and reload it when it changes.

        A change is a new fingerprint (local mtime/size, S3 ETag, HTTP ETag or
        Last-Modified); a version that failed to load is retried only once it changes again.
        Runs until cancelled; returns at once when the interval is 0.

        Parameters
        ----------
        name
            A configured model.
        on_change
            Awaited after every reload attempt (e.g. to update health).
        """
        config = self._configs.get(name)
        if config is None:
            raise ModelNotFoundError(f"unknown model {name!r}")
        interval = config.reload_interval_s
        if interval <= 0:
            return
        last_error = ""
        while True:
            await asyncio.sleep(interval)
            try:
                source = self._source(config)
                fingerprint = await asyncio.to_thread(source.fingerprint)
            except ModelSourceError as exc:
                if str(exc) != last_error:
                    _log.warning("cannot check model for changes: %s", exc, extra={"model": name})
                last_error = str(exc)
                continue
            last_error = ""
            if fingerprint is None or fingerprint == self._seen.get(name):
                continue
            _log.info("model changed, reloading", extra={"model": name, "source": source.url})
            await self.reload(name)
            self._seen[name] = self._seen.get(name) or fingerprint
            if on_change is not None:
                await on_change()

    async def watch_all(self, on_change: Callable[[], Awaitable[None]] | None = None) -> None:
        """Run :meth:`watch` for every configured model until cancelled."""
        async with asyncio.TaskGroup() as group:
            for name in self._configs:
                group.create_task(self.watch(name, on_change), name=f"watch-{name}")

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
