"""Errors every ResourceStore adapter raises, with Kubernetes API semantics."""

from __future__ import annotations

from sedna.resources.objects import ObjectKey

__all__ = [
    "AlreadyExistsError",
    "ConflictError",
    "GoneError",
    "InvalidObjectError",
    "NotFoundError",
    "StoreError",
    "StoreUnavailableError",
]


class StoreError(Exception):
    """Base of store errors."""


class NotFoundError(StoreError):
    """The object does not exist (HTTP 404)."""

    def __init__(self, key: ObjectKey) -> None:
        super().__init__(f"{key.kind} {key.namespace}/{key.name} not found")
        self.key = key


class AlreadyExistsError(StoreError):
    """``create`` of an object that exists (HTTP 409 AlreadyExists)."""

    def __init__(self, key: ObjectKey) -> None:
        super().__init__(f"{key.kind} {key.namespace}/{key.name} already exists")
        self.key = key


class ConflictError(StoreError):
    """A write carried a stale ``resourceVersion`` (HTTP 409 Conflict): re-read and retry."""

    def __init__(self, key: ObjectKey, expected: str, actual: str) -> None:
        super().__init__(
            f"{key.kind} {key.namespace}/{key.name} was modified: resourceVersion "
            f"{expected!r} is stale (current {actual!r}); re-read it and retry"
        )
        self.key = key
        self.expected = expected
        self.actual = actual


class GoneError(StoreError):
    """A watch asked for a ``resourceVersion`` older than the store keeps (HTTP 410): re-list."""


class InvalidObjectError(StoreError):
    """The store refused the object (HTTP 422), e.g. a schema error; ``field`` names it."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class StoreUnavailableError(StoreError):
    """The backend cannot be reached (database down, API server unreachable)."""
