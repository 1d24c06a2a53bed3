"""The Grafana dashboards shipped with the chart: valid models that chart documented metrics.

Every panel query and variable query may only name metrics (and labels) that
``docs/metrics.md`` documents, so a renamed metric breaks this test rather than a dashboard.
The scrape test (``tests/e2e/test_prometheus_scrape.py``) also runs every query against a
real Prometheus.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from observability.metrics_doc import Documented, load
from observability.promql import expand, selectors

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "charts" / "sedna" / "dashboards").glob("*.json"))
DOCUMENTED = {row.name: row for row in load()}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
_TARGET_LABELS = {"job", "instance"}


def _documented(metric: str) -> tuple[Documented, set[str]] | None:
    """The documented row ``metric`` belongs to and the labels its series carry."""
    row = DOCUMENTED.get(metric)
    if row is not None:
        return row, set(row.labels)
    for row in DOCUMENTED.values():
        for suffix in _SUFFIXES.get(row.type, ()):
            if metric == row.name + suffix:
                return row, set(row.labels) | ({"le"} if suffix == "_bucket" else set())
    return None


def panel_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, expr)`` of every target, rows' nested panels included."""
    queries: list[tuple[str, str]] = []
    for panel in board["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                queries.append((inner["title"], target["expr"]))
    return queries


def variable_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """``(variable, query)`` of every query variable."""
    found = []
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append((variable["name"], query["query"] if isinstance(query, dict) else query))
    return found


def _load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def test_the_features_each_have_a_dashboard() -> None:
    assert [p.stem for p in DASHBOARDS] == [
        "control-plane",
        "federated-learning",
        "joint-inference",
    ]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_is_a_grafana_model_with_a_datasource_variable(path: Path) -> None:
    board = _load(path)
    for key in ("uid", "title", "schemaVersion", "panels", "templating", "time"):
        assert key in board, f"{path.name}: no {key}"
    assert re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"]), board["uid"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["w"] > 0
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']}: wider than the grid"
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, f"{panel['title']}: fixed datasource"
        assert panel["targets"], f"{panel['title']}: no query"
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{panel['title']}: refIds repeat"
    used = {m.group(1) for m in re.finditer(r"\$(\w+)", json.dumps(board["panels"]))}
    undefined = used - set(variables) - {"__rate_interval", "__interval", "__range"}
    assert not undefined, f"{path.name}: undefined variables {undefined}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_queries_only_use_documented_metrics_and_labels(path: Path) -> None:
    board = _load(path)
    problems = []
    queries = panel_queries(board)
    for name, query in variable_queries(board):
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
        assert match, f"variable {name}: {query!r} is not label_values(selector, label)"
        queries.append((f"variable {name}", f"{match.group(1)}"))
        found = selectors(match.group(1))
        documented = _documented(found[0].metric) if found else None
        if documented and match.group(2) not in documented[1] | _TARGET_LABELS:
            problems.append(f"variable {name}: {found[0].metric} has no label {match.group(2)}")
    for title, expr in queries:
        found = selectors(expr)
        assert found, f"{title}: {expr!r} names no metric"
        for selector in found:
            documented = _documented(selector.metric)
            if documented is None:
                problems.append(f"{title}: {selector.metric} is not in docs/metrics.md")
                continue
            unknown = selector.labels - documented[1] - _TARGET_LABELS
            if unknown:
                problems.append(f"{title}: {selector.metric} has no labels {sorted(unknown)}")
    assert not problems, "\n".join(problems)


def test_the_issue_feature_metrics_are_charted() -> None:
    charted = {
        selector.metric
        for path in DASHBOARDS
        for _title, expr in panel_queries(_load(path))
        for selector in selectors(expr)
    }
    for metric in (
        "sedna_joint_inference_service_hard_examples",
        "sedna_joint_inference_service_offload_ratio",
        "sedna_aggregator_round_duration_seconds_bucket",
        "sedna_aggregator_bytes_received_total",
        "sedna_aggregator_bytes_sent_total",
        "sedna_lc_gm_connected",
        "sedna_lc_report_delivery_lag_seconds_bucket",
        "sedna_lc_dataset_samples",
        "sedna_controller_queue_depth",
        "sedna_controller_reconcile_errors_total",
    ):
        assert metric in charted, f"no dashboard charts {metric}"


def test_promql_reader() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, job) (rate(grpc_server_handling_seconds_bucket"
        '{job=~"$job", grpc_code!="OK"}[$__rate_interval]))) / ignoring (x) up'
    )
    assert [(s.metric, sorted(s.labels)) for s in selectors(expr)] == [
        ("grpc_server_handling_seconds_bucket", ["grpc_code", "job"]),
        ("up", []),
    ]
    assert expand('rate(x[$__rate_interval]){a=~"$a"}') == 'rate(x[5m]){a=~".*"}'
    with pytest.raises(ValueError, match="without a metric name"):
        selectors('{job="x"}')
