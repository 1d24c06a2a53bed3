"""The ResourceStore port: where Sedna resources live (Kubernetes API or SQL).

Every adapter gives the same semantics, checked by one shared contract test suite
(``services/gm/tests/store/contract.py``):

- ``create`` sets ``uid``, ``resourceVersion``, ``generation = 1`` and ``creationTimestamp``;
  status starts empty.
- ``update`` writes metadata (labels, annotations, finalizers, owner references) and spec, never
  status; ``generation`` is incremented when ``spec`` changes (and by the Kubernetes API
  server, also once when it marks an object for deletion). A non-empty ``resource_version`` on
  the argument must match the stored one, else :class:`ConflictError`; an empty one means
  "last write wins". A write that changes nothing keeps the version and sends no event.
- ``update_status`` writes status only (the status subresource), same conflict rule.
- ``delete`` of an object with finalizers only sets ``deletionTimestamp`` (an update, visible
  as MODIFIED); the object disappears (DELETED) once an ``update`` removes the last finalizer.
  Deleting an object that is already being deleted is a no-op returning it; adding a finalizer
  to it is an :class:`InvalidObjectError` on ``metadata.finalizers``.
- ``resourceVersion`` values are opaque strings, but an adapter's are totally ordered by write;
  ``list`` returns the store's current version, and ``watch(since=that)`` delivers every change
  after it, in order, exactly once; a watch of every kind (``kind=None``) may only keep each
  kind's order (the Kubernetes API has one stream per resource type). ``watch`` from a version
  the store no longer remembers raises :class:`GoneError` (the caller re-lists).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from sedna.resources.objects import ResourceObject

__all__ = ["ListResult", "ResourceStore", "WatchEvent", "WatchEventType"]


class WatchEventType(StrEnum):
    """What happened to an object."""

    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    BOOKMARK = "BOOKMARK"


@dataclass(frozen=True)
class WatchEvent:
    """One change; for DELETED, ``object`` is the last state. BOOKMARK carries only a version."""

    type: WatchEventType
    object: ResourceObject | None
    resource_version: str


@dataclass(frozen=True)
class ListResult:
    """Objects plus the store version to start a watch from."""

    items: list[ResourceObject]
    resource_version: str


@runtime_checkable
class ResourceStore(Protocol):
    """Persistent, watchable storage of Sedna objects (see the module docstring)."""

    async def start(self) -> None:
        """Connect and prepare (create tables, check the CRDs are installed...)."""

    async def close(self) -> None:
        """Release connections; pending watches end."""

    async def create(self, obj: ResourceObject) -> ResourceObject:
        """Store a new object; raises AlreadyExistsError."""
        ...

    async def get(self, kind: str, namespace: str, name: str) -> ResourceObject:
        """Return the object; raises NotFoundError."""
        ...

    async def list(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: Mapping[str, str] | None = None,
    ) -> ListResult:
        """Objects of a kind (every namespace when ``namespace`` is None), by namespace, name."""
        ...

    async def update(self, obj: ResourceObject) -> ResourceObject:
        """Write metadata and spec; raises NotFoundError, ConflictError."""
        ...

    async def update_status(self, obj: ResourceObject) -> ResourceObject:
        """Write status only; raises NotFoundError, ConflictError."""
        ...

    async def delete(
        self, kind: str, namespace: str, name: str, resource_version: str = ""
    ) -> ResourceObject:
        """Delete (or mark for deletion when finalizers remain); raises NotFoundError."""
        ...

    def watch(
        self, kind: str | None = None, namespace: str | None = None, since: str = ""
    ) -> AsyncIterator[WatchEvent]:
        """Changes after ``since`` (empty: from now); raises GoneError when too old."""
        ...
