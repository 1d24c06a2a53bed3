"""The numbers behind ``sedna demo joint-inference``'s table, from the edge worker's lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from sedna.cli.demo_metrics import (
    JointInferenceSummary,
    LatencyStats,
    SampleResult,
    check,
    parse_result_line,
    percentile,
    read_results,
    summarize,
    summary_table,
)


def line(index: int, **overrides: Any) -> str:
    record: dict[str, Any] = {
        "index": index,
        "true_label": 1,
        "edge_label": 1,
        "final_label": 1,
        "cloud_label": None,
        "is_hard": False,
        "latency_ms": 1.0,
    }
    record.update(overrides)
    return json.dumps(record)


def sample(index: int, **overrides: Any) -> SampleResult:
    return parse_result_line(line(index, **overrides))


def test_parse_a_line() -> None:
    got = sample(3, edge_label=2, final_label=1, cloud_label=1, is_hard=True, latency_ms=4)
    assert got == SampleResult(3, 1, 2, 1, 1, True, 4.0)
    assert got.offloaded
    assert not got.fell_back


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "not a JSON object"),
        ("{", "not JSON"),
        (line(0).replace('"index": 0', '"index": "0"'), "'index' must be an integer"),
        (line(0, true_label=True), "'true_label' must be an integer"),
        (line(0, cloud_label=1.5), "'cloud_label' must be an integer"),
        (line(0, is_hard=1), "'is_hard' must be true or false"),
        (line(0, latency_ms=-1), "'latency_ms' must be a number >= 0"),
        (line(0, latency_ms=None), "'latency_ms' must be a number >= 0"),
    ],
)
def test_bad_lines_name_the_field(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_result_line(text)


def test_read_results_skips_torn_lines_and_keeps_the_first_record(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    assert read_results(path) == {}
    path.write_text(
        "\n".join([line(0), line(1, edge_label=7), "", line(1, edge_label=9), '{"index": 2, "tr'])
    )
    results = read_results(path)
    assert sorted(results) == [0, 1]
    assert results[1].edge_label == 7


@pytest.mark.parametrize("q", [0, 1, 37.5, 50, 99, 100])
def test_percentile_matches_numpy(q: float) -> None:
    values = [5.0, 1.0, 3.5, 10.0, 2.25, 8.0, 0.5]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edge_cases() -> None:
    assert percentile([], 50) is None
    assert percentile([4.0], 99) == 4.0
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile([1.0], 101)


def test_summarize() -> None:
    results = [
        # kept at the edge: 2 right, 1 wrong
        sample(0, true_label=1, edge_label=1, final_label=1, latency_ms=1),
        sample(1, true_label=2, edge_label=2, final_label=2, latency_ms=2),
        sample(2, true_label=3, edge_label=5, final_label=5, latency_ms=3),
        # offloaded: the cloud fixes one, keeps one right
        sample(
            3, true_label=4, edge_label=9, final_label=4, cloud_label=4, is_hard=True, latency_ms=10
        ),
        sample(
            4, true_label=6, edge_label=6, final_label=6, cloud_label=6, is_hard=True, latency_ms=20
        ),
        # hard, but the cloud did not answer: the edge's wrong answer stays
        sample(5, true_label=7, edge_label=1, final_label=1, is_hard=True, latency_ms=5000),
    ]
    cloud = {0: 1, 1: 2, 2: 3, 3: 4, 4: 6, 5: 0, 99: 1}
    summary = summarize(results, cloud)
    assert summary.samples == 6
    assert summary.edge_accuracy == pytest.approx(3 / 6)
    assert summary.joint_accuracy == pytest.approx(4 / 6)
    assert summary.cloud_accuracy == pytest.approx(5 / 6)  # index 99 is not a sample
    assert summary.offload_ratio == pytest.approx(3 / 6)
    assert (summary.hard, summary.cloud_fallbacks) == (3, 1)
    assert summary.edge_latency == LatencyStats(3, 2.0, pytest.approx(2.98))
    # the fallback's 5 s is not an offloaded latency
    assert summary.offloaded_latency == LatencyStats(2, 15.0, pytest.approx(19.9))


def test_summarize_without_cloud_pass_or_offloads() -> None:
    summary = summarize([sample(0), sample(1, edge_label=2, final_label=2)])
    assert summary.cloud_accuracy is None
    assert summary.offload_ratio == 0.0
    assert summary.offloaded_latency == LatencyStats(0, None, None)
    assert summarize([sample(0)], {}).cloud_accuracy is None
    with pytest.raises(ValueError, match="no samples"):
        summarize([])


def _summary(**overrides: Any) -> JointInferenceSummary:
    values: dict[str, Any] = {
        "samples": 100,
        "edge_accuracy": 0.85,
        "joint_accuracy": 0.93,
        "cloud_accuracy": 0.98,
        "offload_ratio": 0.26,
        "hard": 26,
        "cloud_fallbacks": 0,
        "edge_latency": LatencyStats(74, 0.5, 1.5),
        "offloaded_latency": LatencyStats(26, 2.0, 4.0),
    }
    values.update(overrides)
    return JointInferenceSummary(**values)


def test_check_passes_when_joint_wins_at_a_minority_offload() -> None:
    assert check(_summary()) == []


def test_check_names_what_is_wrong() -> None:
    problems = check(_summary(joint_accuracy=0.85, offload_ratio=0.5, cloud_fallbacks=3))
    assert problems == [
        "joint accuracy 85.0% is not above edge-only accuracy 85.0%; 3 hard sample(s) got no "
        "cloud answer",
        "offload ratio 50.0% is not below 50% (lower the threshold)",
    ]
    assert check(_summary(offload_ratio=0.3), max_offload_ratio=0.25) == [
        "offload ratio 30.0% is not below 25% (lower the threshold)"
    ]


def test_summary_table_shows_every_number() -> None:
    console = Console(width=120, record=True)
    console.print(summary_table(_summary(cloud_fallbacks=2), title="Joint inference: x"))
    text = console.export_text()
    for expected in [
        "Joint inference: x",
        "edge-only accuracy",
        "85.0%",
        "joint accuracy",
        "93.0%",
        "cloud-only accuracy",
        "98.0%",
        "offload ratio",
        "26.0%",
        "26 of 100 samples hard, 2 fell back",
        "edge-only latency p50",
        "0.50 ms",
        "edge-only latency p99",
        "1.50 ms",
        "offloaded latency p50",
        "2.00 ms",
        "offloaded latency p99",
        "4.00 ms",
    ]:
        assert expected in text


def test_summary_table_without_cloud_numbers() -> None:
    console = Console(width=120, record=True)
    summary = _summary(cloud_accuracy=None, offloaded_latency=LatencyStats(0, None, None))
    console.print(summary_table(summary))
    rows = {
        r.split("│")[1].strip(): r.split("│")[2].strip()
        for r in console.export_text().splitlines()
        if r.count("│") >= 3
    }
    assert rows["cloud-only accuracy"] == "-"
    assert rows["offloaded latency p50"] == "-"


def test_to_dict_is_json_ready() -> None:
    data = json.loads(json.dumps(_summary().to_dict()))
    assert data["edge_latency"] == {"count": 74, "p50": 0.5, "p99": 1.5}
    assert data["joint_accuracy"] == 0.93
