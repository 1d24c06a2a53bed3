"""What ``sedna demo joint-inference`` measures: the edge worker's per-sample lines, summarised.

The example's edge worker appends one JSON object per sample to its output file::

    {"index": 0, "true_label": 3, "edge_label": 3, "final_label": 3, "cloud_label": null,
     "is_hard": false, "latency_ms": 0.41}

:func:`summarize` turns those lines (plus the big model's label for every sample, asked
directly over OIP) into a :class:`JointInferenceSummary`: edge-only, joint and cloud-only
accuracy, the offload ratio and latency percentiles of the samples kept at the edge and of
those the cloud answered. :func:`check` says whether the run shows what joint inference is
for: better accuracy than the edge alone while offloading a minority of the samples.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

__all__ = [
    "MAX_OFFLOAD_RATIO",
    "JointInferenceSummary",
    "LatencyStats",
    "SampleResult",
    "check",
    "parse_result_line",
    "percentile",
    "read_results",
    "summarize",
    "summary_table",
]

MAX_OFFLOAD_RATIO = 0.5
"""Joint inference must win while offloading less than this share of the samples."""


@dataclass(frozen=True)
class SampleResult:
    """One sample as the edge worker recorded it.

    Attributes
    ----------
    index
        Row of the sample in the test dataset.
    true_label, edge_label, final_label
        The truth, the little model's answer and the answer the application got.
    cloud_label
        The big model's answer for an offloaded sample; None when the sample stayed at the
        edge or its cloud call failed (then ``final_label`` is the edge's).
    is_hard
        Whether hard example mining sent the sample to the cloud.
    latency_ms
        Wall time of ``JointInference.inference`` for the sample.
    """

    index: int
    true_label: int
    edge_label: int
    final_label: int
    cloud_label: int | None
    is_hard: bool
    latency_ms: float

    @property
    def offloaded(self) -> bool:
        """Hard and answered by the cloud."""
        return self.is_hard and self.cloud_label is not None

    @property
    def fell_back(self) -> bool:
        """Hard, but the cloud did not answer (the edge result was used)."""
        return self.is_hard and self.cloud_label is None


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key!r} must be an integer, got {value!r}")
    return value


def _optional_int(data: Mapping[str, Any], key: str) -> int | None:
    return None if data.get(key) is None else _int(data, key)


def parse_result_line(line: str) -> SampleResult:
    """Parse one line of the edge worker's output.

    Raises
    ------
    ValueError
        Not a JSON object, or a field is missing or of the wrong type (the message names it).
    """
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    latency = data.get("latency_ms")
    if isinstance(latency, bool) or not isinstance(latency, (int, float)) or latency < 0:
        raise ValueError(f"'latency_ms' must be a number >= 0, got {latency!r}")
    is_hard = data.get("is_hard")
    if not isinstance(is_hard, bool):
        raise ValueError(f"'is_hard' must be true or false, got {is_hard!r}")
    return SampleResult(
        index=_int(data, "index"),
        true_label=_int(data, "true_label"),
        edge_label=_int(data, "edge_label"),
        final_label=_int(data, "final_label"),
        cloud_label=_optional_int(data, "cloud_label"),
        is_hard=is_hard,
        latency_ms=float(latency),
    )


def read_results(path: Path) -> dict[int, SampleResult]:
    """The samples recorded in ``path`` by index (empty when it does not exist yet).

    A line that does not parse is skipped (the last one may be half written); when an index
    appears twice the first record is kept (a restarted worker never rewrites a sample).
    """
    results: dict[int, SampleResult] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return results
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            sample = parse_result_line(line)
        except ValueError:
            continue
        results.setdefault(sample.index, sample)
    return results


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation (NumPy's default).

    Returns None for no values.
    """
    ordered = sorted(values)
    if not ordered:
        return None
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class LatencyStats:
    """Count and percentiles (ms) of a group of samples; None percentiles for no samples."""

    count: int
    p50: float | None
    p99: float | None

    @classmethod
    def of(cls, latencies: Sequence[float]) -> LatencyStats:
        """The stats of ``latencies``."""
        return cls(len(latencies), percentile(latencies, 50), percentile(latencies, 99))


@dataclass(frozen=True)
class JointInferenceSummary:
    """The demo's result table, as numbers.

    Attributes
    ----------
    samples
        Samples the edge worker inferred.
    edge_accuracy
        Accuracy of the little model alone (every sample's ``edge_label``).
    joint_accuracy
        Accuracy of what the application got (``final_label``).
    cloud_accuracy
        Accuracy of the big model on every sample, asked directly (None when not measured).
    offload_ratio
        Share of samples hard example mining sent to the cloud (upstream's
        ``uploadCloudRatio``).
    hard, cloud_fallbacks
        Hard samples, and those among them the cloud did not answer.
    edge_latency, offloaded_latency
        Latency of the samples kept at the edge and of those the cloud answered.
    """

    samples: int
    edge_accuracy: float
    joint_accuracy: float
    cloud_accuracy: float | None
    offload_ratio: float
    hard: int
    cloud_fallbacks: int
    edge_latency: LatencyStats
    offloaded_latency: LatencyStats

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def summarize(
    results: Iterable[SampleResult], cloud_labels: Mapping[int, int] | None = None
) -> JointInferenceSummary:
    """Summarise the samples.

    Parameters
    ----------
    results
        The edge worker's records.
    cloud_labels
        The big model's label per sample index (the cloud-only pass); its accuracy is taken
        over the samples present in both.

    Raises
    ------
    ValueError
        No samples.
    """
    samples = sorted(results, key=lambda s: s.index)
    if not samples:
        raise ValueError("no samples to summarise")
    total = len(samples)
    cloud_accuracy: float | None = None
    if cloud_labels:
        judged = [s for s in samples if s.index in cloud_labels]
        if judged:
            correct = sum(cloud_labels[s.index] == s.true_label for s in judged)
            cloud_accuracy = correct / len(judged)
    hard = [s for s in samples if s.is_hard]
    return JointInferenceSummary(
        samples=total,
        edge_accuracy=sum(s.edge_label == s.true_label for s in samples) / total,
        joint_accuracy=sum(s.final_label == s.true_label for s in samples) / total,
        cloud_accuracy=cloud_accuracy,
        offload_ratio=len(hard) / total,
        hard=len(hard),
        cloud_fallbacks=sum(s.fell_back for s in samples),
        edge_latency=LatencyStats.of([s.latency_ms for s in samples if not s.is_hard]),
        offloaded_latency=LatencyStats.of([s.latency_ms for s in samples if s.offloaded]),
    )


def check(
    summary: JointInferenceSummary, max_offload_ratio: float = MAX_OFFLOAD_RATIO
) -> list[str]:
    """What keeps the run from showing joint inference's point; empty when it does.

    The joint accuracy must be above the edge-only accuracy while the offload ratio stays
    below ``max_offload_ratio``.
    """
    problems: list[str] = []
    if summary.joint_accuracy <= summary.edge_accuracy:
        reason = (
            f"; {summary.cloud_fallbacks} hard sample(s) got no cloud answer"
            if summary.cloud_fallbacks
            else ""
        )
        problems.append(
            f"joint accuracy {summary.joint_accuracy:.1%} is not above edge-only accuracy "
            f"{summary.edge_accuracy:.1%}{reason}"
        )
    if summary.offload_ratio >= max_offload_ratio:
        problems.append(
            f"offload ratio {summary.offload_ratio:.1%} is not below {max_offload_ratio:.0%} "
            "(lower the threshold)"
        )
    return problems


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def summary_table(summary: JointInferenceSummary, title: str = "Joint inference") -> Table:
    """The result table: accuracies, offload ratio and latency percentiles."""
    table = Table(title=title, title_justify="left")
    table.add_column("Metric", no_wrap=True)
    table.add_column("Value", justify="right", no_wrap=True)
    table.add_column("Note")
    cloud = "-" if summary.cloud_accuracy is None else f"{summary.cloud_accuracy:.1%}"
    fallbacks = f", {summary.cloud_fallbacks} fell back" if summary.cloud_fallbacks else ""
    rows = [
        ("edge-only accuracy", f"{summary.edge_accuracy:.1%}", "little model on every sample"),
        ("joint accuracy", f"{summary.joint_accuracy:.1%}", "what the application got"),
        ("cloud-only accuracy", cloud, "big model on every sample, over OIP"),
        (
            "offload ratio",
            f"{summary.offload_ratio:.1%}",
            f"{summary.hard} of {summary.samples} samples hard{fallbacks}",
        ),
        ("edge-only latency p50", _ms(summary.edge_latency.p50), "samples kept at the edge"),
        ("edge-only latency p99", _ms(summary.edge_latency.p99), ""),
        (
            "offloaded latency p50",
            _ms(summary.offloaded_latency.p50),
            "samples the cloud answered",
        ),
        ("offloaded latency p99", _ms(summary.offloaded_latency.p99), ""),
    ]
    for row in rows:
        table.add_row(*row)
    return table
