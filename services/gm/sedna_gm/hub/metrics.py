"""Prometheus metrics of the hub.

``sedna_hub_pending_messages`` is one gauge for all nodes (no ``node`` label): label
cardinality stays bounded with thousands of nodes; the per-node figure is in NodeService.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["HubMetrics"]

_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class HubMetrics:
    """The hub's collectors, registered on ``registry`` (a private one when None).

    Parameters
    ----------
    registry
        Where to register; e.g. ``ServiceServer.registry``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.connected_nodes = Gauge(
            "sedna_hub_connected_nodes", "Nodes with an open hub stream.", registry=registry
        )
        self.messages = Counter(
            "sedna_hub_messages_total",
            "Hub stream messages by direction (in/out) and type.",
            ["direction", "type"],
            registry=registry,
        )
        self.pending = Gauge(
            "sedna_hub_pending_messages",
            "Resource events queued or sent and not yet acknowledged, all nodes together.",
            registry=registry,
        )
        self.delivery_lag = Histogram(
            "sedna_hub_delivery_lag_seconds",
            "Time from queueing a resource event to the node's acknowledgement.",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
