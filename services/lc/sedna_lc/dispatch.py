"""The LC's :class:`~sedna_lc.ports.ObjectHandler`: routes each object the GM sends by kind.

``Dataset`` objects go to the dataset monitor, ``Worker`` objects (``runtime.sedna.io/v1``) to
the process runtime; every other kind is kept in an :class:`ObjectRegistry` that feature
managers can subscribe to.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from sedna.resources.objects import ObjectKey, ResourceObject
from sedna.resources.worker import WORKER_API_VERSION, WORKER_KIND
from sedna_lc.datasets import DatasetMonitor
from sedna_lc.workers import ProcessRuntime

__all__ = ["Dispatcher", "ObjectListener", "ObjectRegistry"]

logger = logging.getLogger(__name__)

DATASET_KIND = "Dataset"


class ObjectListener(Protocol):
    """Told about changes of the objects kept in an :class:`ObjectRegistry`."""

    async def on_apply(self, obj: ResourceObject, credentials: Mapping[str, str]) -> None:
        """An object was added or changed."""

    async def on_remove(self, key: ObjectKey) -> None:
        """An object was removed."""


class ObjectRegistry:
    """The Sedna objects of this node that no built-in manager handles (Models, jobs...)."""

    def __init__(self) -> None:
        self._objects: dict[ObjectKey, ResourceObject] = {}
        self._credentials: dict[ObjectKey, dict[str, str]] = {}
        self._listeners: dict[str, list[ObjectListener]] = {}

    def subscribe(self, kind: str, listener: ObjectListener) -> None:
        """Call ``listener`` for every later change of objects of ``kind``."""
        self._listeners.setdefault(kind, []).append(listener)

    def get(self, key: ObjectKey) -> ResourceObject | None:
        """A copy of the object, if held."""
        obj = self._objects.get(key)
        return obj.clone() if obj is not None else None

    def credentials(self, key: ObjectKey) -> dict[str, str]:
        """The credentials that came with the object."""
        return dict(self._credentials.get(key, {}))

    def objects(self, kind: str | None = None) -> list[ResourceObject]:
        """Copies of the held objects (of ``kind``), sorted by key."""
        return [o.clone() for k, o in sorted(self._objects.items()) if kind in (None, k.kind)]

    def held(self) -> list[ObjectKey]:
        """Every held key."""
        return sorted(self._objects)

    def __len__(self) -> int:
        return len(self._objects)

    async def apply(self, obj: ResourceObject, credentials: Mapping[str, str]) -> None:
        """Store ``obj``; listeners hear about it only when it or its credentials changed."""
        key = obj.key
        old = self._objects.get(key)
        creds = dict(credentials)
        if old is not None and old.to_dict() == obj.to_dict() and self._credentials[key] == creds:
            return
        self._objects[key] = obj.clone()
        self._credentials[key] = creds
        logger.debug("registry: holding %s", key)
        for listener in self._listeners.get(key.kind, []):
            await listener.on_apply(obj.clone(), creds)

    async def remove(self, key: ObjectKey) -> None:
        """Forget ``key``; unknown keys are a no-op."""
        if self._objects.pop(key, None) is None:
            return
        self._credentials.pop(key, None)
        logger.debug("registry: dropped %s", key)
        for listener in self._listeners.get(key.kind, []):
            await listener.on_remove(key)


class Dispatcher:
    """Routes the GM's objects to the node's managers (implements ``ObjectHandler``).

    Parameters
    ----------
    datasets
        Gets ``Dataset`` objects.
    workers
        Gets ``Worker`` objects.
    registry
        Gets every other kind (a new one when None).
    """

    def __init__(
        self,
        datasets: DatasetMonitor,
        workers: ProcessRuntime,
        registry: ObjectRegistry | None = None,
    ) -> None:
        self.datasets = datasets
        self.workers = workers
        self.registry = registry if registry is not None else ObjectRegistry()

    @staticmethod
    def _is_worker(kind: str, api_version: str | None = None) -> bool:
        return kind == WORKER_KIND and api_version in (None, WORKER_API_VERSION)

    async def apply(self, obj: ResourceObject, credentials: Mapping[str, str]) -> None:
        """Hand ``obj`` to its manager (idempotent)."""
        if obj.kind == DATASET_KIND:
            await self.datasets.apply(obj, credentials)
        elif self._is_worker(obj.kind, obj.api_version):
            await self.workers.apply(obj, credentials)
        else:
            await self.registry.apply(obj, credentials)

    async def remove(self, key: ObjectKey) -> None:
        """Tell the key's manager to forget it; unknown keys are a no-op."""
        if key.kind == DATASET_KIND:
            await self.datasets.remove(key)
        elif self._is_worker(key.kind):
            await self.workers.remove(key)
        else:
            await self.registry.remove(key)

    async def resync(self, keys: Sequence[ObjectKey]) -> None:
        """Every manager drops what ``keys`` does not list."""
        await self.datasets.resync(keys)
        await self.workers.resync(keys)
        wanted = set(keys)
        for key in self.registry.held():
            if key not in wanted:
                await self.registry.remove(key)

    def resource_count(self) -> int:
        """How many objects this node holds (``GetNodeInfo.resource_count``)."""
        return len(self.datasets.keys()) + len(self.workers.list_workers()) + len(self.registry)
