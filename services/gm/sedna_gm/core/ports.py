"""Ports between the GM's controllers, its LC hub and its workload runtimes.

- Controllers send objects to nodes through a :class:`NodeMessenger` (the hub implements it).
- The hub hands every report from a node to a :class:`ReportHandler` (the controller manager
  implements it); the hub acknowledges the report only after the handler returns, so a report
  is applied at least once, and handlers are idempotent (they *set* status fields).
- The directory of nodes (:class:`NodeDirectory`) tells controllers which nodes exist and are
  connected, so a reference to an unknown node becomes a status condition, not a stall.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.objects import ResourceObject

__all__ = ["DesiredStateSource", "NodeDirectory", "NodeInfo", "NodeMessenger", "ReportHandler"]


class NodeMessenger(Protocol):
    """Delivers objects to the LocalController of a node, at least once, in order per key."""

    async def upsert(
        self,
        node_name: str,
        obj: ResourceObject,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        """Queue ``obj`` for the node; a newer upsert of the same key replaces a pending one."""

    async def remove(self, node_name: str, obj: ResourceObject) -> None:
        """Queue the removal of ``obj`` (by key) from the node."""


class ReportHandler(Protocol):
    """Applies one report from a node (dataset status, worker report, stage, worker state)."""

    async def handle_report(self, node_name: str, report: hub_service_pb2.NodeReport) -> None:
        """Apply the report durably; raising means 'not applied' (the node will resend)."""


class DesiredStateSource(Protocol):
    """What a node should hold right now: used for the full resync after a reconnect."""

    async def desired_objects(
        self, node_name: str
    ) -> Sequence[tuple[ResourceObject, Mapping[str, str]]]:
        """Every object (with its credentials) that belongs on ``node_name``."""
        ...


@dataclass(frozen=True)
class NodeInfo:
    """A node as the hub knows it."""

    name: str
    connected: bool
    last_seen: datetime | None
    labels: Mapping[str, str]
    agent_address: str = ""


class NodeDirectory(Protocol):
    """Known nodes (every node that ever registered, connected or not)."""

    def get_node(self, name: str) -> NodeInfo | None:
        """The node, or None when it never registered."""
        ...

    def list_nodes(self) -> Sequence[NodeInfo]:
        """All known nodes."""
        ...
