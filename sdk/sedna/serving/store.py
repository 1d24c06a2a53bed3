"""What the OIP servicer needs from "the models the server serves", and a fixed set of them.

The inference service's ``ModelRepository`` (loading, hot reload) and ``BigModelService``
(one estimator) both implement :class:`ModelStore`.
"""

from __future__ import annotations

from typing import Protocol

from sedna.serving.errors import ModelNotFoundError, ModelNotReadyError
from sedna.serving.metrics import InferenceMetrics
from sedna.serving.model import ServedModel

__all__ = ["ModelStore", "StaticModelStore"]


class ModelStore(Protocol):
    """The models a server serves, as the servicer sees them."""

    @property
    def metrics(self) -> InferenceMetrics:
        """The server's inference metrics."""
        ...

    @property
    def names(self) -> tuple[str, ...]:
        """The configured model names (a bounded set: metrics are labelled by them)."""
        ...

    def server_ready(self) -> bool:
        """True when every configured model is loaded."""
        ...

    def model_ready(self, name: str, version: str = "") -> bool:
        """Whether the model (and version, if given) is loaded.

        Raises
        ------
        ModelNotFoundError
            Unknown model or version.
        """
        ...

    def get(self, name: str, version: str = "") -> ServedModel:
        """The loaded model.

        Raises
        ------
        ModelNotFoundError
            Unknown model or version.
        ModelNotReadyError
            Configured but not loaded.
        """
        ...


class StaticModelStore:
    """A fixed set of models, each ready once :meth:`add` has been called with it.

    Parameters
    ----------
    metrics
        The server's inference metrics.
    names
        Models that will be served; each is not ready until added.
    """

    def __init__(self, metrics: InferenceMetrics, names: tuple[str, ...] = ()) -> None:
        self._metrics = metrics
        self._names: list[str] = list(names)
        self._models: dict[str, ServedModel] = {}

    @property
    def metrics(self) -> InferenceMetrics:
        """The server's inference metrics."""
        return self._metrics

    @property
    def names(self) -> tuple[str, ...]:
        """The configured model names."""
        return tuple(self._names)

    def add(self, model: ServedModel) -> None:
        """Serve ``model`` (start its batcher first, on the server's event loop)."""
        if model.name in self._models:
            raise ValueError(f"model {model.name!r} is already served")
        if model.name not in self._names:
            self._names.append(model.name)
        self._models[model.name] = model

    def server_ready(self) -> bool:
        """True when every configured model was added."""
        return all(name in self._models for name in self._names)

    def _check(self, name: str, version: str) -> None:
        if name not in self._names:
            raise ModelNotFoundError(f"unknown model {name!r}")
        model = self._models.get(name)
        if version and model is not None and version != model.version:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version!r}; served: {model.version!r}"
            )

    def model_ready(self, name: str, version: str = "") -> bool:
        """Whether the model was added; NOT_FOUND for an unknown model or version."""
        self._check(name, version)
        return name in self._models

    def get(self, name: str, version: str = "") -> ServedModel:
        """The model; :class:`ModelNotReadyError` while it was not added."""
        self._check(name, version)
        model = self._models.get(name)
        if model is None:
            raise ModelNotReadyError(f"model {name!r} is still loading")
        return model

    async def close(self) -> None:
        """Stop every model's batcher."""
        for model in self._models.values():
            await model.batcher.stop()
