"""Fixtures: a ResourceStore (the real SQLite one when present, else an in-memory double),
fake node ports recording calls, and polling helpers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_gm.core.ports import NodeInfo
from sedna_gm.store.errors import AlreadyExistsError, ConflictError, GoneError, NotFoundError
from sedna_gm.store.port import ListResult, ResourceStore, WatchEvent, WatchEventType


class MemoryStore:
    """In-memory ResourceStore double (integer versions, bounded history, port semantics)."""

    def __init__(self, history: int = 1000) -> None:
        self._objects: dict[ObjectKey, ResourceObject] = {}
        self._events: list[WatchEvent] = []
        self._history = history
        self._version = 0
        self._changed = asyncio.Condition()
        self.closed = False
        self.writes = 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True
        async with self._changed:
            self._changed.notify_all()

    async def _emit(self, type_: WatchEventType, obj: ResourceObject) -> None:
        self.writes += 1
        self._events.append(WatchEvent(type_, obj.clone(), obj.resource_version))
        del self._events[: -self._history]
        async with self._changed:
            self._changed.notify_all()

    def _bump(self, obj: ResourceObject) -> None:
        self._version += 1
        obj.resource_version = str(self._version)

    async def create(self, obj: ResourceObject) -> ResourceObject:
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
        items = [
            o.clone()
            for o in self._objects.values()
            if o.kind == kind
            and (namespace is None or o.namespace == namespace)
            and all(o.labels.get(k) == v for k, v in (label_selector or {}).items())
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
        new = self._current(obj).clone()
        new.status = dict(obj.status)
        self._bump(new)
        self._objects[new.key] = new
        await self._emit(WatchEventType.MODIFIED, new)
        return new.clone()

    async def delete(
        self, kind: str, namespace: str, name: str, resource_version: str = ""
    ) -> ResourceObject:
        probe = ResourceObject(kind=kind, name=name, namespace=namespace)
        probe.resource_version = resource_version
        current = self._current(probe)
        if current.deletion_timestamp is not None:
            return current.clone()
        new = current.clone()
        new.deletion_timestamp = datetime.now(UTC).replace(microsecond=0)
        self._bump(new)
        if new.finalizers:
            self._objects[new.key] = new
            await self._emit(WatchEventType.MODIFIED, new)
        else:
            del self._objects[new.key]
            await self._emit(WatchEventType.DELETED, new)
        return new.clone()

    async def watch(
        self, kind: str | None = None, namespace: str | None = None, since: str = ""
    ) -> AsyncIterator[WatchEvent]:
        position = int(since) if since else self._version
        oldest = int(self._events[0].resource_version) - 1 if self._events else self._version
        if position < oldest:
            raise GoneError(f"resourceVersion {since} is too old (oldest kept: {oldest})")
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


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ResourceStore]:
    """The real SQLite store once it exists, else the in-memory double."""
    try:
        from sedna_gm.store.sql import SqlResourceStore  # type: ignore[import-not-found]
    except ImportError:
        backend: Any = MemoryStore()
    else:
        backend = SqlResourceStore(f"sqlite+aiosqlite:///{tmp_path / 'gm.db'}")
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


class FakeMessenger:
    """NodeMessenger recording ``(op, node, key, generation)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, ObjectKey, int]] = []

    async def upsert(
        self,
        node_name: str,
        obj: ResourceObject,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        self.calls.append(("upsert", node_name, obj.key, obj.generation))

    async def remove(self, node_name: str, obj: ResourceObject) -> None:
        self.calls.append(("remove", node_name, obj.key, obj.generation))


class FakeNodes:
    """NodeDirectory over a mutable set of node names."""

    def __init__(self, *names: str) -> None:
        self.names = set(names)

    def get_node(self, name: str) -> NodeInfo | None:
        if name not in self.names:
            return None
        return NodeInfo(name=name, connected=True, last_seen=None, labels={})

    def list_nodes(self) -> Sequence[NodeInfo]:
        return [n for n in (self.get_node(x) for x in sorted(self.names)) if n is not None]


@pytest.fixture
def messenger() -> FakeMessenger:
    return FakeMessenger()


@pytest.fixture
def nodes() -> FakeNodes:
    return FakeNodes("edge0", "edge1")


async def _eventually(
    check: Callable[[], Awaitable[bool] | bool], within: float = 5.0, what: str = "condition"
) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
def eventually() -> Callable[..., Awaitable[None]]:
    """``await eventually(check, within=5, what=...)``: poll a (possibly async) predicate."""
    return _eventually


def dataset(name: str = "ds1", node: str = "edge0", **spec: Any) -> ResourceObject:
    return ResourceObject(
        kind="Dataset",
        name=name,
        spec={"url": "/data/train.txt", "format": "txt", "nodeName": node, **spec},
    )


@pytest.fixture
def make_dataset() -> Callable[..., ResourceObject]:
    return dataset
