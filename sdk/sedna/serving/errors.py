"""Errors of the inference core; the servicer maps each to one gRPC status code."""

from __future__ import annotations

__all__ = [
    "BackendError",
    "InferenceError",
    "InvalidInputError",
    "ModelNotFoundError",
    "ModelNotReadyError",
]


class InferenceError(Exception):
    """Base class of the errors the inference core reports to callers."""


class ModelNotFoundError(InferenceError):
    """No model of that name (or version) is configured (gRPC ``NOT_FOUND``)."""


class ModelNotReadyError(InferenceError):
    """The model is configured but not loaded yet, or failed to load (``UNAVAILABLE``)."""


class InvalidInputError(InferenceError):
    """A request tensor has the wrong name, datatype, shape or byte count (``INVALID_ARGUMENT``).

    The message names the input and says what was expected.
    """


class BackendError(InferenceError):
    """The backend failed to load or run the model (``INTERNAL``)."""
