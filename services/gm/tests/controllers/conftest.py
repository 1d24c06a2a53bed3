"""Fixtures: a ResourceStore (the real SQLite one when present, else an in-memory double),
fake node ports recording calls, and polling helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from support.memory_store import MemoryStore

from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_gm.core.ports import NodeInfo
from sedna_gm.store.port import ResourceStore


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
