"""The GM's LC hub: the reliable GM <-> LocalController link, GM side.

:class:`NodeHub` is the transport-agnostic core (implements ``NodeMessenger`` and
``NodeDirectory``); :class:`HubServicer` serves it as ``sedna.api.gm.v1.HubService`` and
:class:`NodeServicer` as ``sedna.api.gm.v1.NodeService``.
"""

from sedna_gm.hub.core import HubConfig, HubRejectedError, NodeHub, NodeStats, NodeStream
from sedna_gm.hub.metrics import HubMetrics
from sedna_gm.hub.node_servicer import NODE_SERVICE_NAME, NodeServicer
from sedna_gm.hub.servicer import HUB_SERVICE_NAME, GrpcNodeStream, HubServicer, bearer_token
from sedna_gm.hub.sql_state_store import SqlHubStateStore
from sedna_gm.hub.state_store import HubStateStore, MemoryHubStateStore, NodeRecord

__all__ = [
    "HUB_SERVICE_NAME",
    "NODE_SERVICE_NAME",
    "GrpcNodeStream",
    "HubConfig",
    "HubMetrics",
    "HubRejectedError",
    "HubServicer",
    "HubStateStore",
    "MemoryHubStateStore",
    "NodeHub",
    "NodeRecord",
    "NodeServicer",
    "NodeStats",
    "NodeStream",
    "SqlHubStateStore",
    "bearer_token",
]
