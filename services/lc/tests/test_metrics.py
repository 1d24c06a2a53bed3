"""The LC's feature metrics: dataset sample counts and report delivery lag."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from sedna.api.gm.v1 import hub_service_pb2 as pb
from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_lc.datasets import DatasetMonitor
from sedna_lc.metrics import LCMetrics
from sedna_lc.state import LocalState, Outbox


def _dataset(url: str, name: str = "ds", uid: str = "u1") -> ResourceObject:
    return ResourceObject(
        kind="Dataset",
        name=name,
        namespace="default",
        uid=uid,
        spec={"url": url, "format": "txt", "nodeName": "edge-1"},
    )


def _metrics(registry: CollectorRegistry, counts: dict[ObjectKey, int]) -> LCMetrics:
    return LCMetrics(
        registry,
        connected=lambda: True,
        connections=lambda: 3,
        outbox_size=lambda: 2,
        datasets=lambda: len(counts),
        workers=lambda: 0,
        sample_counts=lambda: counts,
    )


async def test_outbox_reports_the_delivery_lag_of_each_acknowledged_report(
    tmp_path: Path,
) -> None:
    lags: list[float] = []
    async with LocalState(tmp_path / "lc.db") as state:
        outbox = Outbox(state, on_delivered=lags.append)
        for name in "abc":
            await outbox.submit(pb.NodeReport(worker_state=pb.WorkerState(worker_name=name)))
        await outbox.ack(2)
        assert len(lags) == 2
        assert all(lag >= 0 for lag in lags)
        await outbox.ack(2)  # a repeated ack observes nothing again
        assert len(lags) == 2
        await outbox.rebase(10)  # renumbered: the remaining report can no longer be matched
        await outbox.ack(11)
        assert len(lags) == 2
        await outbox.submit(pb.NodeReport(worker_state=pb.WorkerState(worker_name="d")))
        await outbox.ack(12)
        assert len(lags) == 3


async def test_monitor_keeps_the_last_count_of_each_dataset(
    sink: Any, tmp_path: Path, eventually: Any
) -> None:
    data = tmp_path / "index.txt"
    data.write_text("a\nb\n")
    monitor = DatasetMonitor(sink, tmp_path / "state", interval=0.05)
    try:
        obj = _dataset(str(data))
        assert monitor.sample_counts() == {}
        await monitor.apply(obj, {})
        await eventually(lambda: monitor.sample_counts() == {obj.key: 2}, what="count 2")
        data.unlink()  # a failing count keeps the previous count, as the report does
        await monitor.check_now(obj.key)
        assert monitor.sample_counts() == {obj.key: 2}
        data.write_text("a\nb\nc\n")
        await eventually(lambda: monitor.sample_counts() == {obj.key: 3}, what="count 3")
        await monitor.remove(obj.key)
        assert monitor.sample_counts() == {}
    finally:
        await monitor.close()


def test_lc_metrics_expose_sample_counts_and_lag() -> None:
    registry = CollectorRegistry(auto_describe=True)
    counts = {ObjectKey("Dataset", "default", "helmet"): 5}
    metrics = _metrics(registry, counts)
    metrics.delivery_lag.observe(0.2)
    value = registry.get_sample_value
    labels = {"namespace": "default", "dataset": "helmet"}
    assert value("sedna_lc_dataset_samples", labels) == 5.0
    assert value("sedna_lc_gm_connected") == 1.0
    assert value("sedna_lc_gm_connections_total") == 3.0
    assert value("sedna_lc_outbox_reports") == 2.0
    assert value("sedna_lc_report_delivery_lag_seconds_count") == 1.0
    counts[ObjectKey("Dataset", "ns2", "other")] = 7
    text = generate_latest(registry).decode()
    assert "# TYPE sedna_lc_dataset_samples gauge" in text
    assert "# TYPE sedna_lc_gm_connections_total counter" in text
    assert 'sedna_lc_dataset_samples{dataset="other",namespace="ns2"} 7.0' in text
