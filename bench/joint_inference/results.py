"""What one run measured, the derived ratios, the targets, and the tables that show them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from rich.table import Table

from .load import ClosedLoopResult

__all__ = [
    "BATCHING_TARGET",
    "FLOOR_TARGET",
    "HTTP_TARGET",
    "BenchResult",
    "ThroughputRow",
    "Verdict",
    "details",
    "latency_rows",
    "markdown",
    "overhead_unresolved",
    "percentile",
    "rich_tables",
    "throughput_rows",
    "verdicts",
]

FLOOR_TARGET: Final = 1.5
"""Ours' p50 offload overhead must be at most this multiple of the transport floor's p50."""
HTTP_TARGET: Final = 10.0
"""HTTP+JSON's p50 offload overhead must be at least this multiple of ours."""
BATCHING_TARGET: Final = 3.0
"""With the concurrent clients, batching must give at least this multiple of batch-1's rate."""

OURS: Final = "ours"
OURS_B1: Final = "ours-b1"
OURS_B1_STUBS: Final = "ours-b1-stubs"
FLOOR_MODEL: Final = "floor+model"
FLOOR: Final = "floor"
HTTP: Final = "http"
COMPUTE: Final = "compute"
SEQUENTIAL: Final = "sequential"
CONCURRENT: Final = "concurrent"


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by the nearest-rank method; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class ServerStats:
    """``sedna-inference`` metrics over a phase (deltas of its histograms)."""

    requests: int = 0
    batches: int = 0
    mean_batch: float = math.nan
    mean_queue_ms: float = math.nan
    mean_compute_ms: float = math.nan
    """Mean backend call (a whole batch), not per request."""


@dataclass
class ThroughputRow:
    """One path under the concurrent clients."""

    path: str
    load: ClosedLoopResult
    server: ServerStats | None = None


@dataclass
class BenchResult:
    """Everything one run measured.

    Attributes
    ----------
    labels
        Path name -> what it is (table text).
    latencies_s
        Path name -> sequential latencies (seconds); ``compute`` holds the model's
        ``session.run`` durations measured in the floor server during that phase.
    latency_server
        ``sedna-inference`` metrics over the sequential phase, by path.
    throughput
        The concurrent-client runs, in the order run.
    max_abs_diff
        Largest difference between the paths' outputs for the same input (sanity check).
    other_cpu
        Phase -> cores used on average by other processes on the machine (noise check).
    """

    machine: str
    settings: dict[str, Any]
    labels: dict[str, str]
    latencies_s: dict[str, list[float]] = field(default_factory=dict)
    latency_server: dict[str, ServerStats] = field(default_factory=dict)
    throughput: list[ThroughputRow] = field(default_factory=list)
    max_abs_diff: float = math.nan
    other_cpu: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = math.nan

    def p50_ms(self, path: str) -> float:
        """Median sequential latency of ``path`` in ms (NaN when not measured)."""
        return percentile(self.latencies_s.get(path, []), 50) * 1000

    def overhead_ms(self, path: str) -> float:
        """p50 offload overhead: p50 latency minus the model's p50 compute (floor: p50)."""
        if path == FLOOR:
            return self.p50_ms(FLOOR)
        return self.p50_ms(path) - self.p50_ms(COMPUTE)

    def rate(self, path: str) -> float:
        """Requests per second of ``path`` under the concurrent clients (NaN if not run)."""
        for row in self.throughput:
            if row.path == path:
                return row.load.throughput
        return math.nan

    def to_json(self) -> dict[str, Any]:
        """Every figure, for ``--json``."""
        lat = {}
        for path, values in self.latencies_s.items():
            lat[path] = {
                "n": len(values),
                **{f"p{p}_ms": percentile(values, p) * 1000 for p in (50, 90, 99)},
                "overhead_p50_ms": None if path == COMPUTE else self.overhead_ms(path),
            }
        return {
            "machine": self.machine,
            "settings": self.settings,
            "labels": self.labels,
            "latency": lat,
            "latency_server": {k: vars(v) for k, v in self.latency_server.items()},
            "throughput": [
                {
                    "path": row.path,
                    "clients": row.load.clients,
                    "seconds": row.load.seconds,
                    "requests": len(row.load.latencies_s),
                    "rps": row.load.throughput,
                    **{
                        f"p{p}_ms": percentile(row.load.latencies_s, p) * 1000 for p in (50, 90, 99)
                    },
                    "errors": row.load.errors,
                    "first_error": row.load.first_error,
                    "client_cpu_s": row.load.client_cpu_s,
                    "server_cpu_s": row.load.server_cpu_s,
                    "server": None if row.server is None else vars(row.server),
                }
                for row in self.throughput
            ],
            "verdicts": [
                {**vars(v), "value": v.value if v.applicable else None} for v in verdicts(self)
            ],
            "max_abs_diff": self.max_abs_diff,
            "other_cpu_cores": self.other_cpu,
            "notes": self.notes,
            "elapsed_s": self.elapsed_s,
        }


@dataclass
class Verdict:
    """One target: the measured ratio, the bound, and whether it is met.

    ``applicable`` is False when this run cannot judge the target (``value`` is NaN,
    ``passed`` False, ``detail`` says why): the overhead targets when the model's compute
    varies more than the overhead being measured.
    """

    name: str
    value: float
    bound: str
    passed: bool
    detail: str
    applicable: bool = True

    @property
    def measured(self) -> str:
        """The ratio as shown, or ``n/a``."""
        return f"{self.value:.2f}x" if self.applicable else "n/a"

    @property
    def verdict(self) -> str:
        """``PASS``, ``FAIL`` or ``n/a``."""
        if not self.applicable:
            return "n/a"
        return "PASS" if self.passed else "FAIL"


def overhead_unresolved(result: BenchResult) -> str | None:
    """Why this run cannot resolve the p50 offload overhead, or None when it can.

    The overhead is p50 latency minus p50 model compute, two figures each as uncertain
    as the compute varies. When the compute's interquartile range exceeds the floor's
    overhead (the yardstick of both overhead targets), or ours comes out <= 0, the
    difference is noise: a model whose compute is small and steady (``--model cnn``)
    judges those targets.
    """
    compute = result.latencies_s.get(COMPUTE, [])
    if not compute:
        return None
    spread = (percentile(compute, 75) - percentile(compute, 25)) * 1000
    floor, ours = result.overhead_ms(FLOOR), result.overhead_ms(OURS)
    if spread > floor:
        return (
            f"model compute varies too much: interquartile range {spread:.2f} ms > the "
            f"floor's {floor:.2f} ms overhead (ours {ours:.2f} ms = p50 "
            f"{result.p50_ms(OURS):.2f} - compute {result.p50_ms(COMPUTE):.2f}); judged "
            "by --model cnn"
        )
    if ours <= 0:
        return (
            f"ours comes out {ours:.2f} ms (p50 {result.p50_ms(OURS):.2f} - compute "
            f"{result.p50_ms(COMPUTE):.2f}): within the compute's noise; judged by --model cnn"
        )
    return None


def verdicts(result: BenchResult) -> list[Verdict]:
    """The issue's three targets, from ``result``."""
    out: list[Verdict] = []
    ours, floor, http = (result.overhead_ms(p) for p in (OURS, FLOOR, HTTP))
    unresolved = overhead_unresolved(result)
    if unresolved is not None and result.latencies_s.get(OURS):
        if result.latencies_s.get(FLOOR):
            out.append(
                Verdict(
                    "p50 offload overhead vs the transport floor",
                    math.nan,
                    f"<= {FLOOR_TARGET:g}x",
                    False,
                    unresolved,
                    applicable=False,
                )
            )
        if result.latencies_s.get(HTTP):
            out.append(
                Verdict(
                    "HTTP+JSON p50 offload overhead vs ours",
                    math.nan,
                    f">= {HTTP_TARGET:g}x",
                    False,
                    f"ours unresolved (above); end to end "
                    f"{result.p50_ms(HTTP) / result.p50_ms(OURS):.1f}x",
                    applicable=False,
                )
            )
    elif result.latencies_s.get(OURS) and result.latencies_s.get(FLOOR):
        ratio = ours / floor
        out.append(
            Verdict(
                "p50 offload overhead vs the transport floor",
                ratio,
                f"<= {FLOOR_TARGET:g}x",
                ratio <= FLOOR_TARGET,
                f"ours {ours:.2f} ms (p50 {result.p50_ms(OURS):.2f} - compute "
                f"{result.p50_ms(COMPUTE):.2f}) vs floor echo {floor:.2f} ms",
            )
        )
    if unresolved is None and result.latencies_s.get(OURS) and result.latencies_s.get(HTTP):
        ratio = http / ours
        out.append(
            Verdict(
                "HTTP+JSON p50 offload overhead vs ours",
                ratio,
                f">= {HTTP_TARGET:g}x",
                ratio >= HTTP_TARGET,
                f"http {http:.1f} ms vs ours {ours:.2f} ms; end to end "
                f"{result.p50_ms(HTTP) / result.p50_ms(OURS):.1f}x",
            )
        )
    batched, single = result.rate(OURS), result.rate(OURS_B1)
    if not math.isnan(batched) and not math.isnan(single):
        clients = result.settings.get("clients")
        ratio = batched / single
        out.append(
            Verdict(
                f"throughput with {clients} clients: dynamic batching vs batch size 1",
                ratio,
                f">= {BATCHING_TARGET:g}x",
                ratio >= BATCHING_TARGET,
                f"{batched:.0f} vs {single:.0f} req/s",
            )
        )
    return out


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def latency_rows(result: BenchResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the sequential (one client) table."""
    header = ["path", "n", "p50 ms", "p90 ms", "p99 ms", "req/s", "overhead p50 ms"]
    rows: list[list[str]] = []
    for path, values in result.latencies_s.items():
        p50, p90, p99 = (percentile(values, p) * 1000 for p in (50, 90, 99))
        mean = sum(values) / len(values) if values else math.nan
        rate = "-" if path == COMPUTE or not values else f"{1 / mean:.0f}"
        overhead = "-" if path == COMPUTE else _ms(result.overhead_ms(path))
        rows.append(
            [
                result.labels.get(path, path),
                str(len(values)),
                *(_ms(v) for v in (p50, p90, p99)),
                rate,
                overhead,
            ]
        )
    return header, rows


def throughput_rows(result: BenchResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the concurrent-clients table."""
    header = [
        "path",
        "clients",
        "req/s",
        "p50 ms",
        "p99 ms",
        "mean batch",
        "server / client CPU (cores)",
        "server CPU ms/req",
        "errors",
    ]
    rows: list[list[str]] = []
    for row in result.throughput:
        load = row.load
        batch = "-" if row.server is None else f"{row.server.mean_batch:.1f}"
        cpu = f"{load.server_cpu_s / load.seconds:.2f} / {load.client_cpu_s / load.seconds:.2f}"
        done = len(load.latencies_s)
        per_request = f"{load.server_cpu_s * 1000 / done:.2f}" if done else "-"
        rows.append(
            [
                result.labels.get(row.path, row.path),
                str(load.clients),
                f"{load.throughput:.0f}",
                _ms(percentile(load.latencies_s, 50) * 1000),
                _ms(percentile(load.latencies_s, 99) * 1000),
                batch,
                cpu,
                per_request,
                str(load.errors),
            ]
        )
    return header, rows


def details(result: BenchResult) -> list[str]:
    """Lines under the tables: server-side timings, sanity and noise checks."""
    server = {OURS: "batching server", OURS_B1: "batch-1 server"}
    lines: list[str] = []

    def timing(stats: ServerStats) -> str:
        return (
            f"mean batch {stats.mean_batch:.2f}, mean queue wait {stats.mean_queue_ms:.2f} ms, "
            f"mean backend call {stats.mean_compute_ms:.2f} ms"
        )

    for path, stats in result.latency_server.items():
        lines.append(
            f"sedna-inference {server.get(path, path)}, one client: {stats.requests} requests, "
            + timing(stats)
        )
    for row in result.throughput:
        if row.server is not None:
            lines.append(
                f"sedna-inference {server.get(row.path, row.path)}, {row.load.clients} clients: "
                + timing(row.server)
            )
        if row.load.errors:
            lines.append(
                f"{result.labels.get(row.path, row.path)}: {row.load.errors} errors, first: "
                f"{row.load.first_error}"
            )
    noise = ", ".join(f"{phase} {cores:.2f}" for phase, cores in result.other_cpu.items())
    if noise:
        lines.append(
            f"CPU cores used by other processes (noise check, ~0 on a quiet machine): {noise}"
        )
    lines.append(
        f"offload client: {result.settings.get('offload_client')}; outputs of the paths agree "
        f"to {result.max_abs_diff:.1e}; total time {result.elapsed_s:.0f} s"
    )
    return lines + result.notes


def _table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def rich_tables(result: BenchResult) -> list[Table]:
    """The sequential table, the concurrent table and the targets."""
    tables = [
        _table("One client, sequential (paths interleaved)", *latency_rows(result)),
    ]
    if result.throughput:
        seconds = result.throughput[0].load.seconds
        tables.append(
            _table(
                f"Concurrent clients, closed loop, {seconds:g} s each",
                *throughput_rows(result),
            )
        )
    targets = Table(title="Targets", title_justify="left")
    for name in ("target", "measured", "bound", "verdict", "detail"):
        targets.add_column(name)
    for v in verdicts(result):
        colour = "yellow" if not v.applicable else "green" if v.passed else "red"
        targets.add_row(v.name, v.measured, v.bound, f"[{colour}]{v.verdict}[/{colour}]", v.detail)
    tables.append(targets)
    return tables


def markdown(result: BenchResult) -> str:
    """The same tables in GitHub Markdown (for bench/README.md)."""

    def md(header: list[str], rows: list[list[str]], right: set[int] | None = None) -> list[str]:
        right = set(range(1, len(header))) if right is None else right
        align = ["---:" if i in right else "---" for i in range(len(header))]
        return [
            "| " + " | ".join(header) + " |",
            "|" + "|".join(align) + "|",
            *("| " + " | ".join(row) + " |" for row in rows),
        ]

    lines = md(*latency_rows(result))
    if result.throughput:
        lines += ["", *md(*throughput_rows(result))]
    lines += [
        "",
        *md(
            ["target", "measured", "bound", "verdict", "detail"],
            [[v.name, v.measured, v.bound, v.verdict, v.detail] for v in verdicts(result)],
            {1},
        ),
    ]
    return "\n".join(lines)
