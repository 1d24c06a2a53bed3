"""ResourceStore port and its adapters (SQL, Kubernetes)."""

from sedna_gm.store.errors import (
    AlreadyExistsError,
    ConflictError,
    GoneError,
    InvalidObjectError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
)
from sedna_gm.store.port import ListResult, ResourceStore, WatchEvent, WatchEventType

__all__ = [
    "AlreadyExistsError",
    "ConflictError",
    "GoneError",
    "InvalidObjectError",
    "ListResult",
    "NotFoundError",
    "ResourceStore",
    "StoreError",
    "StoreUnavailableError",
    "WatchEvent",
    "WatchEventType",
]
