"""The hub's durable per-node state: which reports it has applied, under which session.

A GM restart must not re-apply reports the node already got acknowledged, so the highest
applied report sequence number of each node outlives the process through a
:class:`HubStateStore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["HubStateStore", "MemoryHubStateStore", "NodeRecord"]


@dataclass(frozen=True)
class NodeRecord:
    """What the hub remembers about a node across restarts.

    Attributes
    ----------
    node_name
        The node.
    session_id
        The last session the hub opened with the node (informational across restarts: the
        event queue itself is in memory, so a restarted hub always opens a new session).
    last_applied_report_seq
        Highest report sequence number from the node that the ``ReportHandler`` applied.
    """

    node_name: str
    session_id: str
    last_applied_report_seq: int


class HubStateStore(Protocol):
    """Persistence of :class:`NodeRecord`; writes must be durable when they return."""

    async def load_all(self) -> Sequence[NodeRecord]:
        """Every node record."""
        ...

    async def save(self, record: NodeRecord) -> None:
        """Insert or replace the record of ``record.node_name``."""

    async def close(self) -> None:
        """Release resources."""


class MemoryHubStateStore:
    """A :class:`HubStateStore` in a dict (embedded mode and tests; lost on restart)."""

    def __init__(self) -> None:
        self._records: dict[str, NodeRecord] = {}

    async def load_all(self) -> Sequence[NodeRecord]:
        """Every node record.

        Returns
        -------
        Sequence[NodeRecord]
            Records in insertion order.
        """
        return list(self._records.values())

    async def save(self, record: NodeRecord) -> None:
        """Insert or replace the record of ``record.node_name``.

        Parameters
        ----------
        record
            The new record.
        """
        self._records[record.node_name] = record

    async def close(self) -> None:
        """Nothing to release."""
