"""Fakes and helpers for the controllers that run workers on the local runtime: a recording
NodeMessenger, a NodeDirectory of hosts, a started manager and ``Worker`` lookups."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sedna.resources.objects import ResourceObject
from sedna_gm.controllers import Manager
from sedna_gm.core.ports import NodeInfo
from sedna_gm.store.errors import NotFoundError


class Messenger:
    """NodeMessenger recording ``(op, node, name, credentials)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, dict[str, str]]] = []

    async def upsert(
        self, node_name: str, obj: ResourceObject, credentials: Mapping[str, str] | None = None
    ) -> None:
        self.calls.append(("upsert", node_name, obj.name, dict(credentials or {})))

    async def remove(self, node_name: str, obj: ResourceObject) -> None:
        self.calls.append(("remove", node_name, obj.name, {}))


@dataclass
class Nodes:
    """NodeDirectory: name -> (agent host, labels)."""

    nodes: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)

    def get_node(self, name: str) -> NodeInfo | None:
        if name not in self.nodes:
            return None
        host, labels = self.nodes[name]
        return NodeInfo(name, True, None, labels, agent_address=f"{host}:9100")

    def list_nodes(self) -> Sequence[NodeInfo]:
        return [n for n in (self.get_node(x) for x in sorted(self.nodes)) if n is not None]


@contextlib.asynccontextmanager
async def started(manager: Manager) -> AsyncIterator[Manager]:
    """``manager`` started for the block, stopped after it."""
    await manager.start()
    try:
        yield manager
    finally:
        await manager.stop()


async def get_worker(store: Any, name: str, namespace: str = "default") -> ResourceObject | None:
    """The ``Worker`` object ``name`` (None when there is none)."""
    try:
        return await store.get("Worker", namespace, name)
    except NotFoundError:
        return None
