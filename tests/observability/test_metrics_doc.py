"""``docs/metrics.md`` itself: its tables parse, and the worker SDK metrics match the SDK.

The service metrics are checked against a real Prometheus in
``tests/e2e/test_prometheus_scrape.py``; the worker SDK metrics live in worker processes, so
their table is checked against the SDK's registry here.
"""

from __future__ import annotations

from observability.metrics_doc import load

SCRAPED = ("gm", "lc", "kb", "aggregator", "inference")
DOCUMENTED = load()


def test_the_doc_tables_parse_and_name_each_metric_once() -> None:
    names = [row.name for row in DOCUMENTED]
    assert len(names) > 40
    assert len(names) == len(set(names)), "a metric is documented twice"
    for row in DOCUMENTED:
        unknown = set(row.services) - {*SCRAPED, "worker"}
        assert not unknown, f"docs/metrics.md:{row.line}: unknown services {unknown}"
        if row.type == "counter":
            assert row.name.endswith("_total"), f"{row.name}: counters are queried as *_total"


def test_worker_sdk_metrics_match_the_doc() -> None:
    from prometheus_client.metrics import MetricWrapperBase

    from sedna.core.joint_inference import joint_inference

    exported = {
        metric.describe()[0].name: metric
        for metric in vars(joint_inference).values()
        if isinstance(metric, MetricWrapperBase)
    }
    documented = [row for row in DOCUMENTED if row.services == ("worker",)]
    assert {row.family for row in documented} == set(exported)
    for row in documented:
        metric = exported[row.family]
        assert metric.describe()[0].type == row.type, row.name
        # The label names of a family without children are only on the wrapper.
        assert frozenset(metric._labelnames) == row.labels, row.name
