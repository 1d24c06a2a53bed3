"""An in-memory ResourceStore test double (integer versions, bounded history).

It follows the ``ResourceStore`` docstring: generation bumps on spec changes, finalizers delay
DELETED, stale versions conflict, and a watch from a version older than the kept history raises
GoneError. Tests can switch it off (``unavailable``: every call raises StoreUnavailableError)
and count its open watch streams (``active_watches``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime

from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_gm.store.errors import (
    AlreadyExistsError,
    ConflictError,
    GoneError,
    NotFoundError,
    StoreUnavailableError,
)
from sedna_gm.store.port import ListResult, WatchEvent, WatchEventType

__all__ = ["MemoryStore"]


class MemoryStore:
    """In-memory ResourceStore double (see the module docstring)."""

    def __init__(self, history: int = 1000) -> None:
        self._objects: dict[ObjectKey, ResourceObject] = {}
        self._events: list[WatchEvent] = []
        self._history = history
        self._version = 0
        self._changed = asyncio.Condition()
        self.unavailable = False
        self.closed = False
        self.active_watches = 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True
        async with self._changed:
            self._changed.notify_all()

    def _check(self) -> None:
        if self.unavailable:
            raise StoreUnavailableError("memory store switched off")

    async def _emit(self, kind: WatchEventType, obj: ResourceObject) -> None:
        self._events.append(WatchEvent(kind, obj.clone(), obj.resource_version))
        del self._events[: -self._history]
        async with self._changed:
            self._changed.notify_all()

    def _bump(self, obj: ResourceObject) -> None:
        self._version += 1
        obj.resource_version = str(self._version)

    async def create(self, obj: ResourceObject) -> ResourceObject:
        self._check()
        if obj.key in self._objects:
            raise AlreadyExistsError(obj.key)
        new = obj.clone()
        new.uid = str(uuid.uuid4())
        new.generation = 1
        new.creation_timestamp = datetime.now(UTC).replace(microsecond=0)
        new.status = {}
        self._bump(new)
        self._objects[new.key] = new
        await self._emit(WatchEventType.ADDED, new)
        return new.clone()

    async def get(self, kind: str, namespace: str, name: str) -> ResourceObject:
        self._check()
        key = ObjectKey(kind, namespace, name)
        if key not in self._objects:
            raise NotFoundError(key)
        return self._objects[key].clone()

    async def list(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: Mapping[str, str] | None = None,
    ) -> ListResult:
        self._check()
        items = [
            obj.clone()
            for obj in self._objects.values()
            if obj.kind == kind
            and (namespace is None or obj.namespace == namespace)
            and all(obj.labels.get(k) == v for k, v in (label_selector or {}).items())
        ]
        items.sort(key=lambda o: (o.name, o.namespace))
        return ListResult(items, str(self._version))

    def _current(self, obj: ResourceObject) -> ResourceObject:
        current = self._objects.get(obj.key)
        if current is None:
            raise NotFoundError(obj.key)
        if obj.resource_version and obj.resource_version != current.resource_version:
            raise ConflictError(obj.key, obj.resource_version, current.resource_version)
        return current

    async def update(self, obj: ResourceObject) -> ResourceObject:
        self._check()
        current = self._current(obj)
        new = current.clone()
        new.labels, new.annotations = dict(obj.labels), dict(obj.annotations)
        new.finalizers, new.owner_references = list(obj.finalizers), list(obj.owner_references)
        if obj.spec != current.spec:
            new.spec = dict(obj.spec)
            new.generation += 1
        self._bump(new)
        if new.deletion_timestamp is not None and not new.finalizers:
            del self._objects[new.key]
            await self._emit(WatchEventType.DELETED, new)
        else:
            self._objects[new.key] = new
            await self._emit(WatchEventType.MODIFIED, new)
        return new.clone()

    async def update_status(self, obj: ResourceObject) -> ResourceObject:
        self._check()
        new = self._current(obj).clone()
        new.status = dict(obj.status)
        self._bump(new)
        self._objects[new.key] = new
        await self._emit(WatchEventType.MODIFIED, new)
        return new.clone()

    async def delete(
        self, kind: str, namespace: str, name: str, resource_version: str = ""
    ) -> ResourceObject:
        self._check()
        key = ObjectKey(kind, namespace, name)
        probe = ResourceObject(kind=kind, name=name, namespace=namespace)
        probe.resource_version = resource_version
        current = self._current(probe)
        if current.deletion_timestamp is not None:
            return current.clone()
        new = current.clone()
        new.deletion_timestamp = datetime.now(UTC).replace(microsecond=0)
        self._bump(new)
        if new.finalizers:
            self._objects[key] = new
            await self._emit(WatchEventType.MODIFIED, new)
        else:
            del self._objects[key]
            await self._emit(WatchEventType.DELETED, new)
        return new.clone()

    async def watch(
        self, kind: str | None = None, namespace: str | None = None, since: str = ""
    ) -> AsyncIterator[WatchEvent]:
        self._check()
        position = int(since) if since else self._version
        oldest = int(self._events[0].resource_version) - 1 if self._events else self._version
        if position < oldest:
            raise GoneError(f"resourceVersion {since} is too old (oldest kept: {oldest})")
        self.active_watches += 1
        try:
            while not self.closed:
                for event in list(self._events):
                    if int(event.resource_version) <= position:
                        continue
                    position = int(event.resource_version)
                    obj = event.object
                    assert obj is not None
                    if (kind is None or obj.kind == kind) and (
                        namespace is None or obj.namespace == namespace
                    ):
                        yield event
                async with self._changed:
                    if self._version == position and not self.closed:
                        await self._changed.wait()
        finally:
            self.active_watches -= 1
