"""``sedna.api.gm.v1.NodeService``: the node directory plus the hub's delivery figures."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from sedna.api.gm.v1 import node_service_pb2, node_service_pb2_grpc
from sedna_gm.hub.core import NodeHub

__all__ = ["NODE_SERVICE_NAME", "NodeServicer"]

NODE_SERVICE_NAME: Final = "sedna.api.gm.v1.NodeService"


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


class NodeServicer(node_service_pb2_grpc.NodeServiceServicer):
    """Answers ListNodes/GetNode from a :class:`NodeHub`.

    Parameters
    ----------
    hub
        Directory and statistics source.
    """

    def __init__(self, hub: NodeHub) -> None:
        self._hub = hub

    def _node(self, name: str) -> node_service_pb2.Node | None:
        info = self._hub.get_node(name)
        stats = self._hub.node_stats(name)
        if info is None or stats is None:
            return None
        return node_service_pb2.Node(
            name=info.name,
            connected=info.connected,
            connected_since=_timestamp(stats.connected_since),
            last_seen=_timestamp(info.last_seen),
            agent_address=info.agent_address,
            agent_version=stats.agent_version,
            labels=dict(info.labels),
            pending_messages=stats.pending_messages,
            delivery_lag_ms=stats.delivery_lag_ms,
            resource_count=stats.resource_count,
        )

    async def ListNodes(  # noqa: N802 - gRPC method name
        self,
        request: node_service_pb2.ListNodesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> node_service_pb2.ListNodesResponse:
        """Every known node, by name."""
        nodes = [self._node(info.name) for info in self._hub.list_nodes()]
        return node_service_pb2.ListNodesResponse(nodes=[n for n in nodes if n is not None])

    async def GetNode(  # noqa: N802 - gRPC method name
        self,
        request: node_service_pb2.GetNodeRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> node_service_pb2.GetNodeResponse:
        """One node; INVALID_ARGUMENT without a name, NOT_FOUND when unknown."""
        if not request.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name must not be empty")
        node = self._node(request.name)
        if node is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"node {request.name!r} not found")
        return node_service_pb2.GetNodeResponse(node=node)
