"""The edge workers' counters as Prometheus metrics on the GM's ``/metrics``.

``sedna_joint_inference_edge_metric{namespace, service, metric}``: the latest numeric value
of each counter an edge worker reported (``inferenceNumber``, ``hardExampleNumber``,
``uploadCloudRatio``, ``cloudFallbackNumber``...), as in ``status.metrics``. Non-numeric values
are left out; a deleted service's series are removed.

The feature's headline figures also get a family of their own, so dashboards and alerts need
no ``metric`` label matcher (the same values, ``{namespace, service}``):
``sedna_joint_inference_service_inferences`` (``inferenceNumber``),
``sedna_joint_inference_service_hard_examples`` (``hardExampleNumber``: samples offloaded to
the cloud) and ``sedna_joint_inference_service_offload_ratio`` (``uploadCloudRatio``: hard
examples / inferences). They are gauges: a restarted edge worker starts counting from zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry, Gauge

from sedna.resources.objects import ObjectKey

__all__ = ["HEADLINE_METRICS", "EdgeMetrics"]

HEADLINE_METRICS = {
    "inferenceNumber": (
        "sedna_joint_inference_service_inferences",
        "Samples the JointInferenceService's edge worker inferred (its inferenceNumber)",
    ),
    "hardExampleNumber": (
        "sedna_joint_inference_service_hard_examples",
        "Hard examples the edge worker offloaded to the cloud (its hardExampleNumber)",
    ),
    "uploadCloudRatio": (
        "sedna_joint_inference_service_offload_ratio",
        "Share of samples offloaded to the cloud, 0..1 (the edge worker's uploadCloudRatio)",
    ),
}
"""Report key -> (metric name, help) of the families each report key also feeds."""


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


class EdgeMetrics:
    """The gauge family and the series each service has.

    Parameters
    ----------
    registry
        Where the family is registered (the GM server's registry).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.gauge = Gauge(
            "sedna_joint_inference_edge_metric",
            "Latest value of a counter reported by a JointInferenceService's edge worker",
            ["namespace", "service", "metric"],
            registry=registry,
        )
        self.headline = {
            key: Gauge(name, help_text, ["namespace", "service"], registry=registry)
            for key, (name, help_text) in HEADLINE_METRICS.items()
        }
        self._series: dict[ObjectKey, set[str]] = {}

    def observe(self, key: ObjectKey, metrics: Sequence[Mapping[str, str]]) -> None:
        """Set the service's series to ``metrics`` (``[{"key", "value"}]``)."""
        wanted: dict[str, float] = {}
        for item in metrics:
            number = _number(str(item.get("value", "")))
            if number is not None:
                wanted[str(item["key"])] = number
        for gone in self._series.get(key, set()) - set(wanted):
            self._remove(key, gone)
        for name, number in wanted.items():
            self.gauge.labels(key.namespace, key.name, name).set(number)
            headline = self.headline.get(name)
            if headline is not None:
                headline.labels(key.namespace, key.name).set(number)
        self._series[key] = set(wanted)

    def forget(self, key: ObjectKey) -> None:
        """Remove every series of the service."""
        for name in self._series.pop(key, set()):
            self._remove(key, name)

    def _remove(self, key: ObjectKey, name: str) -> None:
        self.gauge.remove(key.namespace, key.name, name)
        headline = self.headline.get(name)
        if headline is not None:
            headline.remove(key.namespace, key.name)
