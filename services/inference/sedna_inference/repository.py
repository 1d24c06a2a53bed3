"""The model repository: the transport-agnostic core of the inference server.

It knows which models are configured, fetches and loads them through the backend port and
hot-reloads them. Each loaded model is a :class:`~sedna.serving.model.ServedModel` (request
validation and dynamic batching, shared with the SDK's ``BigModelService``); the repository
is the :class:`~sedna.serving.store.ModelStore` the OIP servicer serves.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sedna.serving.errors import BackendError, ModelNotFoundError, ModelNotReadyError
from sedna.serving.metrics import InferenceMetrics
from sedna.serving.model import InputTensor, ModelMetadata, OutputTensor, ServedModel
from sedna_inference.backends import ModelLoader, load_backend
from sedna_inference.sources import FetchedModel, ModelSource, ModelSourceError, open_source

__all__ = [
    "DEFAULT_CACHE_DIR",
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
        Where the model is (a :class:`~pathlib.Path` or a string): a local file or directory
        (e.g. a SavedModel), ``s3://bucket/key``, ``s3://bucket/prefix/`` (every object under
        it, as a directory) or an ``http(s)://`` URL; remote models are downloaded to the
        repository's cache directory, remote archives (``.tar.gz``, ``.zip``, ...) unpacked
        there (see :mod:`sedna_inference.sources`). The file suffix, or the directory's
        content, picks the backend (see :func:`~sedna_inference.backends.load_backend`).
    format
        The Model resource's format name (e.g. ``onnx``, ``pt``, ``keras``), passed to the
        loader as ``model_format``: it picks the backend only when the file suffix does not
        (a URL without one, say). ``None``: the suffix or directory alone.
    version
        The one version served.
    max_batch_size
        Most requests per backend call; 1 turns dynamic batching off.
    max_queue_delay_ms
        Longest a batch waits for more requests.
    inline_compute_ms
        A lone request runs on the event loop while the model's calls average at most this
        long (:class:`~sedna.serving.batcher.DynamicBatcher`); 0: never.
    reload_interval_s
        How often :meth:`ModelRepository.watch` polls the source for a new version; 0 never.
    """

    name: str
    path: Path | str
    version: str = "1"
    max_batch_size: int = 1
    max_queue_delay_ms: float = 0.0
    inline_compute_ms: float = 0.0
    reload_interval_s: float = 0.0
    format: str | None = None


DEFAULT_CACHE_DIR = Path(tempfile.gettempdir()) / "sedna-inference-models"
"""Where remote models are downloaded unless the repository is given another directory."""


class ModelRepository:
    """Configured models by name, loaded through a backend loader and hot-reloaded.

    Parameters
    ----------
    metrics
        The server's inference metrics.
    loader
        ``load(path, *, model_format) -> Backend``, called with each model's local copy and
        its :attr:`ModelConfig.format`; by default
        :func:`~sedna_inference.backends.load_backend` (suffix, directory layout, format).
    cache_dir
        Where ``s3://`` and ``http(s)://`` models are downloaded.
    environ
        Where S3 credentials are read (``os.environ`` by default; see
        :class:`~sedna_inference.sources.S3Source`).
    """

    def __init__(
        self,
        metrics: InferenceMetrics,
        loader: ModelLoader = load_backend,
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
            backend = await asyncio.to_thread(
                self._loader, fetched.path, model_format=config.format
            )
            model = ServedModel(
                config.name,
                backend,
                self.metrics,
                version=config.version,
                max_batch_size=config.max_batch_size,
                max_queue_delay_ms=config.max_queue_delay_ms,
                inline_compute_ms=config.inline_compute_ms,
            )
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
