"""What one run measures, percentiles, and the table that shows it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from rich.table import Table

__all__ = [
    "MEMORY_TARGET_KB",
    "P99_TARGET_MS",
    "UPSTREAM_EVENT_STALENESS",
    "UPSTREAM_REPORT_STALENESS",
    "LoadResult",
    "RunResult",
    "markdown_table",
    "percentile",
    "rich_table",
]

P99_TARGET_MS = 200.0
"""Target: status propagation p99 with 1,000 nodes on one GM."""
MEMORY_TARGET_KB = 100.0
"""Target: GM memory per connected node, in KB (1 KB = 1,000 bytes)."""
UPSTREAM_EVENT_STALENESS = "upstream: 30-60 s resync (not measured)"
"""Upstream Sedna: a lost GM->LC message waits for the informer resync, which re-sends the
object every 30-60 s (reference notes 2.6: no acks, at-most-once per connection)."""
UPSTREAM_REPORT_STALENESS = "upstream: until the count changes again (not measured)"
"""Upstream Sedna: a lost LC->GM dataset count is never re-sent as such; the LC's monitor
(every 60 s) reports only changes (reference notes 1c), so the status stays stale until the
count changes again."""


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by the nearest-rank method; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def kib_to_kb(kib: float) -> float:
    """KiB (what ``/proc`` reports) to KB."""
    return kib * 1.024


@dataclass
class LoadResult:
    """One steady report load: every node reports once per ``interval`` seconds.

    Attributes
    ----------
    offered_rate
        Reports submitted per second, all nodes together.
    latencies_ms
        LC submit -> Watch, one per report the Watch showed.
    missing
        Reports the Watch never showed (before the drain timeout).
    applied_rate
        Reports applied to the store per second, from the start of the load to the last one
        applied: the offered rate when the GM keeps up, its capacity when it does not.
    drain_s
        How long after the load ended the last report reached the status.
    gm_cpu, sim_cpu
        CPU used during the load, in cores (GM process; all simulated-LC processes).
    submitted, received
        Reports submitted on the LCs; report messages the GM received (its
        ``sedna_hub_messages_total{direction="in",type="report"}``; duplicates included).
    behind_s
        How late the load generator ran at worst (client-side saturation check).
    """

    interval: float
    offered_rate: float
    latencies_ms: list[float] = field(default_factory=list)
    missing: int = 0
    applied_rate: float = math.nan
    drain_s: float = math.nan
    gm_cpu: float = math.nan
    sim_cpu: float = math.nan
    submitted: int = 0
    received: int = 0
    behind_s: float = 0.0

    @property
    def p50_ms(self) -> float:
        """Median propagation latency."""
        return percentile(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        """99th-percentile propagation latency."""
        return percentile(self.latencies_ms, 99)

    @property
    def max_ms(self) -> float:
        """Largest propagation latency."""
        return max(self.latencies_ms) if self.latencies_ms else math.nan


@dataclass
class RunResult:
    """The measurements of one node count (times in seconds, memory in KiB from /proc)."""

    nodes: int
    workers: int
    connect_s: float = math.nan
    rss_base_kb: int = 0
    rss_idle_kb: int = 0
    rss_placed_kb: int = 0
    rss_end_kb: int = 0
    gm_cpu_idle: float = math.nan
    create_rate: float = math.nan
    create_s: float = math.nan
    update_rate: float = math.nan
    update_s: float = math.nan
    gm_cpu_reconcile: float = math.nan
    loads: list[LoadResult] = field(default_factory=list)
    stale_after_ack: list[float] = field(default_factory=list)
    stale_idle: list[float] = field(default_factory=list)
    stale_event: list[float] = field(default_factory=list)
    drops_done: int = 0
    sim_rss_kb: int = 0
    reconnects: int = 0
    other_cpu: float = math.nan
    notes: list[str] = field(default_factory=list)

    def kb_per_node(self, rss_kb: int) -> float:
        """GM memory above the no-node baseline, per node, in KB."""
        return kib_to_kb(rss_kb - self.rss_base_kb) / self.nodes

    @property
    def kb_per_node_idle(self) -> float:
        """GM memory per connected idle node, KB (the target's figure)."""
        return self.kb_per_node(self.rss_idle_kb)

    def to_json(self) -> dict[str, object]:
        """Every field plus the derived figures (for ``--json``)."""
        data = asdict(self)
        data["kb_per_node"] = {
            "idle": self.kb_per_node_idle,
            "placed": self.kb_per_node(self.rss_placed_kb),
            "end": self.kb_per_node(self.rss_end_kb),
        }
        for load, out in zip(self.loads, data["loads"], strict=True):
            out.update(p50_ms=load.p50_ms, p99_ms=load.p99_ms, max_ms=load.max_ms)
        return data


def _stale(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 50):.2f} / {max(values):.2f} s"


def _cores(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 100:.0f}%"


def _rows(results: Sequence[RunResult]) -> tuple[list[str], list[list[str]]]:
    header = ["metric", *(f"N={r.nodes:,}" for r in results), "target / upstream design"]
    rows: list[list[str]] = []

    def row(name: str, cells: Sequence[str], target: str = "") -> None:
        rows.append([name, *cells, target])

    row("simulated LCs (worker processes)", [f"{r.nodes} ({r.workers})" for r in results])
    row("connect all nodes", [f"{r.connect_s:.1f} s" for r in results])
    row(
        "GM RSS: no node / N idle",
        [f"{r.rss_base_kb / 1024:.0f} / {r.rss_idle_kb / 1024:.0f} MiB" for r in results],
    )
    row(
        "GM memory per connected idle node",
        [f"{r.kb_per_node_idle:.1f} KB" for r in results],
        f"< {MEMORY_TARGET_KB:.0f} KB per node",
    )
    row(
        "  ... with one Dataset placed per node",
        [f"{r.kb_per_node(r.rss_placed_kb):.1f} KB" for r in results],
    )
    row(
        "  ... at the end of the run",
        [f"{r.kb_per_node(r.rss_end_kb):.1f} KB" for r in results],
    )
    row("GM CPU, N nodes idle (heartbeats)", [_cores(r.gm_cpu_idle) for r in results])
    row(
        "reconcile: create N Datasets",
        [f"{r.create_rate:.0f} obj/s ({r.create_s:.1f} s)" for r in results],
    )
    row(
        "reconcile: change N specs",
        [f"{r.update_rate:.0f} obj/s ({r.update_s:.1f} s)" for r in results],
    )
    row("GM CPU while reconciling", [_cores(r.gm_cpu_reconcile) for r in results])
    for index in range(max(len(r.loads) for r in results)):
        loads = [r.loads[index] if index < len(r.loads) else None for r in results]
        interval = next(load.interval for load in loads if load is not None)

        def cells(fmt: str, loads: list[LoadResult | None] = loads) -> list[str]:
            return ["-" if x is None else fmt.format(x=x) for x in loads]

        row(
            f"reports every {interval:g} s per node: offered / applied",
            cells("{x.offered_rate:.0f} / {x.applied_rate:.0f} per s"),
        )
        row(
            "  propagation p50 / p99 (LC submit -> Watch)",
            cells("{x.p50_ms:.1f} / {x.p99_ms:.1f} ms"),
            f"p99 < {P99_TARGET_MS:.0f} ms at N=1,000",
        )
        row("  max; samples; never seen", cells("{x.max_ms:.0f} ms; {x.submitted}; {x.missing}"))
        row("  backlog drained after the load", cells("{x.drain_s:.1f} s"))
        row(
            "  GM CPU / simulated-LC CPU",
            cells("{x.gm_cpu:.0%} / {x.sim_cpu:.0%}"),
        )
        row("  report messages GM got / submitted", cells("{x.received} / {x.submitted}"))
    row(
        "lost LC->GM report, just after an ack: p50 / max",
        [_stale(r.stale_after_ack) for r in results],
        UPSTREAM_REPORT_STALENESS,
    )
    row(
        "lost LC->GM report, node idle > retransmit: p50 / max",
        [_stale(r.stale_idle) for r in results],
        UPSTREAM_REPORT_STALENESS,
    )
    row(
        "lost GM->LC event (spec change): p50 / max",
        [_stale(r.stale_event) for r in results],
        UPSTREAM_EVENT_STALENESS,
    )
    row(
        "simulated-LC RSS per node (client side)",
        [f"{kib_to_kb(r.sim_rss_kb) / r.nodes:.0f} KB" for r in results],
    )
    row("link reconnects during the run", [str(r.reconnects) for r in results])
    row(
        "CPU used by other processes on the machine",
        [f"{r.other_cpu:.2f} cores" for r in results],
        "noise check: should be ~0",
    )
    return header, rows


def rich_table(results: Sequence[RunResult]) -> Table:
    """The results as one rich table (one column per node count)."""
    header, rows = _rows(results)
    table = Table(title="GlobalManager control plane with simulated LocalControllers")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i in (0, len(header) - 1) else "right")
    for row in rows:
        table.add_row(*row)
    return table


def markdown_table(results: Sequence[RunResult]) -> str:
    """The same table in GitHub Markdown (for bench/README.md)."""
    header, rows = _rows(results)
    align = ["---" if i in (0, len(header) - 1) else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
