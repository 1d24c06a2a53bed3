"""Prometheus metrics of the controllers, labelled by controller name.

One :class:`ControllerMetrics` per registry: a registry refuses two collectors with the same
name, so every controller of a manager shares the families and picks its label values.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ControllerMetrics"]

# Reconciles range from sub-millisecond cache hits to multi-second store round trips.
_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ControllerMetrics:
    """The metric families every controller and work queue reports to.

    Parameters
    ----------
    registry
        Where to register the families (e.g. ``ServiceServer.registry``).

    Attributes
    ----------
    queue_depth
        ``sedna_controller_queue_depth{controller}``: keys waiting to be processed.
    queue_adds
        ``sedna_controller_queue_adds_total{controller}``: keys queued.
    queue_retries
        ``sedna_controller_queue_retries_total{controller}``: rate-limited re-adds.
    reconcile_total
        ``sedna_controller_reconcile_total{controller,result}``; result is ``success``,
        ``error``, ``requeue`` or ``requeue_after``.
    reconcile_errors
        ``sedna_controller_reconcile_errors_total{controller}``.
    reconcile_seconds
        ``sedna_controller_reconcile_seconds{controller}`` histogram.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.queue_depth = Gauge(
            "sedna_controller_queue_depth",
            "Keys waiting in the controller's work queue",
            ["controller"],
            registry=registry,
        )
        self.queue_adds = Counter(
            "sedna_controller_queue_adds_total",
            "Keys added to the controller's work queue",
            ["controller"],
            registry=registry,
        )
        self.queue_retries = Counter(
            "sedna_controller_queue_retries_total",
            "Rate-limited re-adds to the controller's work queue",
            ["controller"],
            registry=registry,
        )
        self.reconcile_total = Counter(
            "sedna_controller_reconcile_total",
            "Reconciles by result",
            ["controller", "result"],
            registry=registry,
        )
        self.reconcile_errors = Counter(
            "sedna_controller_reconcile_errors_total",
            "Reconciles that raised",
            ["controller"],
            registry=registry,
        )
        self.reconcile_seconds = Histogram(
            "sedna_controller_reconcile_seconds",
            "Time spent in one reconcile",
            ["controller"],
            buckets=_BUCKETS,
            registry=registry,
        )
