"""Prometheus metrics of the LocalController, on the LC server's registry.

The gauges read the LC's live state when scraped (no bookkeeping on the hot paths); the
delivery-lag histogram is fed by the outbox when the GM acknowledges a report.
``sedna_lc_dataset_samples`` has one series per dataset this node monitors, which is bounded
by what the GM assigns to the node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sedna.resources.objects import ObjectKey

__all__ = ["DELIVERY_LAG_BUCKETS", "ConnectionsCollector", "DatasetSamplesCollector", "LCMetrics"]

DELIVERY_LAG_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
"""Up to an hour: reports wait in the outbox for as long as the GM is unreachable."""


class DatasetSamplesCollector(Collector):
    """``sedna_lc_dataset_samples{namespace, dataset}``, read from the monitor at scrape time.

    Parameters
    ----------
    counts
        Returns the latest count per dataset (``DatasetMonitor.sample_counts``).
    """

    def __init__(self, counts: Callable[[], Mapping[ObjectKey, int]]) -> None:
        self._counts = counts

    def describe(self) -> Iterable[GaugeMetricFamily]:
        """The family without samples (so registering does not read the monitor)."""
        return [self._family()]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """One sample per counted dataset."""
        family = self._family()
        for key, count in sorted(self._counts().items()):
            family.add_metric([key.namespace, key.name], float(count))
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "sedna_lc_dataset_samples",
            "Samples in each Dataset this node monitors, as last counted.",
            labels=["namespace", "dataset"],
        )


class ConnectionsCollector(Collector):
    """``sedna_lc_gm_connections_total``: streams to the GM established (welcomed) so far.

    Parameters
    ----------
    connections
        Returns the link's count (``GMLink.connections``; 0 before the link starts).
    """

    def __init__(self, connections: Callable[[], int]) -> None:
        self._connections = connections

    def describe(self) -> Iterable[CounterMetricFamily]:
        """The family (registering does not read the link)."""
        return [self._family(None)]

    def collect(self) -> Iterable[CounterMetricFamily]:
        """The current count."""
        return [self._family(float(self._connections()))]

    @staticmethod
    def _family(value: float | None) -> CounterMetricFamily:
        return CounterMetricFamily(
            "sedna_lc_gm_connections",
            "Streams to the GlobalManager established; more than one means reconnects.",
            value=value,
        )


class LCMetrics:
    """The LC's metric families, registered on ``registry``.

    Parameters
    ----------
    registry
        The LC server's registry.
    connected
        Whether the stream to the GM is up now.
    connections
        Streams to the GM established so far.
    outbox_size, datasets, workers
        Current number of unacknowledged reports, monitored datasets, supervised workers.
    sample_counts
        Latest sample count per dataset.

    Attributes
    ----------
    delivery_lag
        ``sedna_lc_report_delivery_lag_seconds``: give ``delivery_lag.observe`` to the outbox.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        connected: Callable[[], bool],
        connections: Callable[[], int],
        outbox_size: Callable[[], int],
        datasets: Callable[[], int],
        workers: Callable[[], int],
        sample_counts: Callable[[], Mapping[ObjectKey, int]],
    ) -> None:
        Gauge(
            "sedna_lc_gm_connected",
            "1 while the stream to the GlobalManager is up.",
            registry=registry,
        ).set_function(lambda: 1.0 if connected() else 0.0)
        Gauge(
            "sedna_lc_outbox_reports",
            "Reports persisted locally and not yet acknowledged by the GlobalManager.",
            registry=registry,
        ).set_function(lambda: float(outbox_size()))
        Gauge("sedna_lc_datasets", "Datasets this node monitors.", registry=registry).set_function(
            lambda: float(datasets())
        )
        Gauge("sedna_lc_workers", "Workers this node supervises.", registry=registry).set_function(
            lambda: float(workers())
        )
        self.delivery_lag = Histogram(
            "sedna_lc_report_delivery_lag_seconds",
            "Time from a report entering the outbox to the GlobalManager's acknowledgement.",
            buckets=DELIVERY_LAG_BUCKETS,
            registry=registry,
        )
        registry.register(ConnectionsCollector(connections))
        registry.register(DatasetSamplesCollector(sample_counts))
