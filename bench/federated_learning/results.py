"""The derived figures (medians, rates, bandwidth, memory ratios), the targets and the tables."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from rich.table import Table

from .runner import FLOOR, FLOWER, LABELS, OURS, WEBSOCKET, SystemResult

__all__ = [
    "BANDWIDTH_TARGET",
    "MEMORY_TARGET",
    "RATE_TARGET",
    "Verdict",
    "markdown",
    "notes",
    "rich_table",
    "rows",
    "verdicts",
]

RATE_TARGET: Final = 3.0
"""Ours' round rate must be at least this multiple of Flower's."""
BANDWIDTH_TARGET: Final = 0.30
"""Ours' effective bandwidth must be at least this fraction of the raw socket's."""
MEMORY_TARGET: Final = 3.0
"""The aggregator's peak RSS must stay under this multiple of one model's bytes."""

MB: Final = 1e6
MIB: Final = 1024 * 1024

HEADERS: Final = (
    "system",
    "params",
    "rounds",
    "round time, median (IQR)",
    "round rate",
    "payload / round",
    "effective bandwidth",
    "vs floor",
    "CPU per round: server / K clients",
    "server RSS idle / peak",
    "peak / model",
    "aggregate check",
)


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(p25, median, p75); NaN when empty; all three equal for one value."""
    if not values:
        return math.nan, math.nan, math.nan
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def median(values: Sequence[float]) -> float:
    """The median; NaN when empty."""
    return quartiles(values)[1]


def round_rate(result: SystemResult) -> float:
    """Measured rounds per second over the measured window (gaps between rounds included)."""
    if not result.round_times or result.window_s <= 0:
        return math.nan
    return len(result.round_times) / result.window_s


def bandwidth(result: SystemResult) -> float:
    """Payload bytes per round (K uploads + K downloads) / median round time, in bytes/s."""
    m = median(result.round_times)
    return result.payload_bytes_per_round / m if m and not math.isnan(m) else math.nan


def _by_system(results: Sequence[SystemResult]) -> dict[str, SystemResult]:
    return {r.system: r for r in results}


def _check(result: SystemResult) -> str:
    if result.system == FLOOR:
        return "bytes only (no aggregation)"
    if result.max_abs_error is None:
        return "n/a"
    verdict = "OK" if result.correct else "WRONG"
    return f"{verdict} (max |err| {result.max_abs_error:.1e})"


def _cpu(result: SystemResult) -> str:
    if result.server_cpu_s is None or result.client_cpu_s is None or not result.total_rounds:
        return "n/a"
    n = result.total_rounds
    return f"{result.server_cpu_s / n:.1f} s / {result.client_cpu_s / n:.1f} s"


def _params(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n:,}"


def rows(results: Sequence[SystemResult]) -> list[list[str]]:
    """One row of strings per system, in :data:`HEADERS` order."""
    floor = _by_system(results).get(FLOOR)
    floor_bw = bandwidth(floor) if floor is not None and floor.ok else math.nan
    out = []
    for r in results:
        label = LABELS[r.system]
        if r.error is not None:
            out.append([label, _params(r.params), "failed", r.error[:120], *[""] * 8])
            continue
        q1, q2, q3 = quartiles(r.round_times)
        bw = bandwidth(r)
        payload = f"{r.payload_bytes_per_round / MB:,.0f} MB"
        if r.wire_bytes_per_round is not None:
            payload += f" ({r.wire_bytes_per_round / MB:,.0f} MB JSON on the wire)"
        ratio = bw / floor_bw if not math.isnan(floor_bw) else math.nan
        out.append(
            [
                label,
                _params(r.params),
                str(len(r.round_times)),
                f"{q2:.2f} s ({q1:.2f}-{q3:.2f})",
                f"{round_rate(r) * 60:.2f} /min",
                payload,
                f"{bw / MB:,.0f} MB/s",
                "-" if r.system == FLOOR else (f"{ratio:.0%}" if not math.isnan(ratio) else "n/a"),
                _cpu(r),
                f"{r.idle_rss_kb / 1024:,.0f} / {r.peak_rss_kb / 1024:,.0f} MiB",
                f"{r.peak_rss_kb * 1024 / r.model_bytes:.2f}x",
                _check(r),
            ]
        )
    return out


@dataclass(frozen=True)
class Verdict:
    """One target: the measured value against the bound."""

    name: str
    target: str
    measured: str
    passed: bool | None
    """None: not applicable (a system missing or failed, or run at another size)."""

    @property
    def verdict(self) -> str:
        """MET / MISSED / n/a."""
        return "n/a" if self.passed is None else ("MET" if self.passed else "MISSED")


def verdicts(results: Sequence[SystemResult]) -> list[Verdict]:
    """The issue's three targets, each against what this run measured."""
    by = _by_system(results)
    ours, flower, floor = by.get(OURS), by.get(FLOWER), by.get(FLOOR)
    if ours is not None and not ours.ok:
        ours = None  # failed or wrong: nothing to judge
    out = []
    if ours is not None and flower is not None and flower.ok and flower.params == ours.params:
        ratio = round_rate(ours) / round_rate(flower)
        measured = (
            f"{ratio:.2f}x ({round_rate(ours) * 60:.2f} vs "
            f"{round_rate(flower) * 60:.2f} rounds/min)"
        )
        out.append(
            Verdict("round rate vs Flower", f">= {RATE_TARGET:g}x", measured, ratio >= RATE_TARGET)
        )
    else:
        out.append(
            Verdict("round rate vs Flower", f">= {RATE_TARGET:g}x", "n/a (not both run)", None)
        )
    if ours is not None and floor is not None and floor.ok and floor.params == ours.params:
        share = bandwidth(ours) / bandwidth(floor)
        measured = f"{share:.0%} ({bandwidth(ours) / MB:,.0f} vs {bandwidth(floor) / MB:,.0f} MB/s)"
        out.append(
            Verdict(
                "bandwidth vs raw socket",
                f">= {BANDWIDTH_TARGET:.0%}",
                measured,
                share >= BANDWIDTH_TARGET,
            )
        )
    else:
        out.append(
            Verdict(
                "bandwidth vs raw socket", f">= {BANDWIDTH_TARGET:.0%}", "n/a (not both run)", None
            )
        )
    if ours is not None:
        factor = ours.peak_rss_kb * 1024 / ours.model_bytes
        measured = (
            f"{factor:.2f}x ({ours.peak_rss_kb / 1024:,.0f} MiB peak, idle "
            f"{ours.idle_rss_kb / 1024:,.0f} MiB; model {ours.model_bytes / MIB:,.0f} MiB, "
            f"K={ours.clients})"
        )
        out.append(
            Verdict(
                "aggregator peak RSS",
                f"< {MEMORY_TARGET:g}x model",
                measured,
                factor < MEMORY_TARGET,
            )
        )
    else:
        out.append(
            Verdict(
                "aggregator peak RSS", f"< {MEMORY_TARGET:g}x model", "n/a (ours not run)", None
            )
        )
    return out


def notes(results: Sequence[SystemResult], params: int) -> list[str]:
    """Lines under the table: size caps, extrapolations, failures, machine noise."""
    lines = []
    for r in results:
        if r.other_cores is not None:
            steal = (
                f" (hypervisor steal: {r.steal_share:.0%} of the CPU time)"
                if r.steal_share is not None
                else ""
            )
            lines.append(
                f"{r.system}: {r.wall_s:.0f} s wall; CPU used by other processes meanwhile "
                f"{r.other_cores:.2f} cores{steal}"
            )
        if r.error is not None:
            lines.append(f"{r.system}: FAILED: {r.error}")
        if r.system == WEBSOCKET and r.params != params and r.ok:
            m = median(r.round_times) * params / r.params
            lines.append(
                f"websocket + JSON ran at P={_params(r.params)} (--ws-params) instead of "
                f"P={_params(params)}: its JSON text and Python float lists need tens to hundreds "
                f"of times the model's memory per process. JSON cost is linear in P, so at "
                f"P={_params(params)} a round would "
                f"take ~{m:,.0f} s (extrapolated, not measured)."
            )
        if r.note:
            lines.append(f"{r.system}: {r.note}")
    return lines


def rich_table(results: Sequence[SystemResult], title: str) -> Table:
    """The results as a rich table."""
    table = Table(title=title)
    for header in HEADERS:
        table.add_column(header, overflow="fold")
    for row in rows(results):
        table.add_row(*row)
    return table


def markdown(results: Sequence[SystemResult], params: int) -> str:
    """The table, notes and verdicts as Markdown (for bench/README.md)."""
    lines = [
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(HEADERS) - 2) + ["---"]) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    lines.append("")
    lines += [f"- {line}" for line in notes(results, params)]
    lines.append("")
    lines.append("| target | bound | measured | verdict |")
    lines.append("|---|---|---|---|")
    lines += [f"| {v.name} | {v.target} | {v.measured} | {v.verdict} |" for v in verdicts(results)]
    return "\n".join(lines)
