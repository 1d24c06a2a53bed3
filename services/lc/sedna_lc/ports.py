"""Ports inside the LocalController, between its GM link and its managers.

- The GM link delivers each object the GM sends (a Dataset, a Worker, ...) to an
  :class:`ObjectHandler`; it acknowledges the event to the GM only after ``apply``/``remove``
  returned, so handlers must be idempotent (the same event may arrive again after a reconnect).
- Managers send reports to the GM through a :class:`ReportSink`: the sink persists the report in
  the local outbox *before* returning, assigns its sequence number, and the link delivers it at
  least once; the GM de-duplicates by sequence number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.objects import ObjectKey, ResourceObject

__all__ = ["ObjectHandler", "ReportSink"]


class ObjectHandler(Protocol):
    """Receives the objects the GM assigns to this node."""

    async def apply(self, obj: ResourceObject, credentials: Mapping[str, str]) -> None:
        """Create or update the object's local state (start monitoring, start a worker...)."""

    async def remove(self, key: ObjectKey) -> None:
        """Forget the object (stop monitoring, stop the worker); unknown keys are a no-op."""

    async def resync(self, keys: Sequence[ObjectKey]) -> None:
        """After a full resync: ``keys`` is everything the node should hold; drop the rest."""


class ReportSink(Protocol):
    """Durable, at-least-once channel of reports to the GM."""

    async def submit(self, report: hub_service_pb2.NodeReport) -> int:
        """Persist ``report`` (its ``seq`` is assigned here) and return the sequence number."""
        ...
