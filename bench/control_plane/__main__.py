"""``python -m bench.control_plane``: the GM control-plane benchmark (see ``--help``)."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .results import MEMORY_TARGET_KB, P99_TARGET_MS, RunResult, markdown_table, rich_table
from .scenario import BenchConfig, run_one

app = typer.Typer(add_completion=False, rich_markup_mode="rich")
console = Console()
if not console.is_terminal:
    console = Console(width=200)

HELP = "\n\n".join(
    [
        "Benchmark one GlobalManager (the real [bold]sedna-gm[/bold], SQLite store) with N "
        "simulated LocalControllers (the real GMLink + LocalState + Outbox, one gRPC connection "
        "each), spread over worker processes.",
        "For every N, on a fresh GM: GM memory per connected node (VmRSS with no node vs N "
        "idle); reconcile throughput (N Datasets created, then N specs changed, until every "
        "node got them and their status is written); status propagation latency p50/p99 (LC "
        "outbox submit -> a ResourceService Watch shows the new numberOfSamples) under steady "
        "report loads; recovery after one lost message (hub and link retransmit after 2x "
        "heartbeat without an ack), next to upstream Sedna's bounds from the reference notes "
        "(not measured).",
        "Targets: 1,000 nodes on one GM with p99 < 200 ms and < 100 KB of GM memory per node. "
        "The default run (N=100 then N=1000) takes about 7 minutes on 2 cores.",
    ]
)


def _floats(value: str, option: str) -> list[float]:
    """Parse comma-separated positive numbers (``option`` names the flag in errors)."""
    try:
        numbers = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{option} {value!r}: expected comma-separated numbers") from None
    if not numbers or min(numbers) <= 0:
        raise typer.BadParameter(f"{option}: every value must be > 0")
    return numbers


def _nodes(value: str) -> list[int]:
    """Parse the comma-separated node counts of ``--nodes``."""
    try:
        counts = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{value!r}: expected comma-separated integers") from None
    if not counts or min(counts) < 3:
        raise typer.BadParameter("every node count must be >= 3")
    return counts


def _machine() -> str:
    """CPU count and model, memory, OS and Python version of this machine."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem_kb / 1024 / 1024:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def verdict(results: list[RunResult]) -> list[str]:
    """One line per target, judged on the largest node count (rich markup)."""

    def mark(ok: bool) -> str:
        return "[green]met[/green]" if ok else "[red]NOT met[/red]"

    biggest = max(results, key=lambda r: r.nodes)
    kb = biggest.kb_per_node_idle
    lines = [
        f"target at N={biggest.nodes}: GM memory {kb:.1f} KB per connected node "
        f"(< {MEMORY_TARGET_KB:.0f} KB): {mark(kb < MEMORY_TARGET_KB)}"
    ]
    for load in biggest.loads:
        lines.append(
            f"target at N={biggest.nodes}, reports every {load.interval:g} s per node "
            f"({load.offered_rate:.0f}/s): p99 {load.p99_ms:.1f} ms (< {P99_TARGET_MS:.0f} ms): "
            f"{mark(load.p99_ms < P99_TARGET_MS and not load.missing)}"
        )
    return lines


@app.command(help=HELP)
def main(
    *,
    nodes: Annotated[
        str,
        typer.Option(
            "--nodes",
            help="Comma-separated node counts; each gets its own fresh GM, one after the other.",
        ),
    ] = "100,1000",
    links_per_worker: Annotated[
        int,
        typer.Option(
            min=1,
            help="Simulated LCs per worker process (N / this = processes; the GM has its own).",
        ),
    ] = 250,
    connect_batch: Annotated[
        int,
        typer.Option(
            min=1, help="Each worker starts this many LCs, waits until connected, repeats."
        ),
    ] = 100,
    heartbeat: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="GM --heartbeat-seconds (the links adopt it; retransmit = 2x heartbeat).",
        ),
    ] = 5.0,
    report_intervals: Annotated[
        str,
        typer.Option(
            help="Report loads, one after the other: seconds between two dataset reports of "
            "one node (load = N / interval reports/s). 60 is upstream's dataset-monitor period "
            "(every count changing every period); 10 is a stress load.",
        ),
    ] = "60,10",
    load_seconds: Annotated[
        float, typer.Option(min=1.0, help="Length of each report load, seconds.")
    ] = 45.0,
    drain_timeout: Annotated[
        float,
        typer.Option(
            min=1.0,
            help="After a load, wait at most this long for the GM to apply what it queued.",
        ),
    ] = 180.0,
    apply_concurrency: Annotated[
        int, typer.Option(min=1, help="Apply calls in flight during the reconcile phase.")
    ] = 16,
    drops: Annotated[
        int,
        typer.Option(min=1, help="Nodes per lost-message case (3 cases; at most N/3 each)."),
    ] = 5,
    work_dir: Annotated[
        Path | None,
        typer.Option(help="Parent of each run's GM folder (store + gm.log); default: $TMPDIR."),
    ] = None,
    lc_state_dir: Annotated[
        Path | None,
        typer.Option(
            help="Parent of the simulated LCs' SQLite files; default /dev/shm (tmpfs) when "
            "writable: the client side is not what is measured."
        ),
    ] = None,
    gm_log_level: Annotated[
        str, typer.Option(help="The GM's --log-level (its log goes to gm.log in its folder).")
    ] = "INFO",
    gm_arg: Annotated[
        list[str] | None,
        typer.Option(
            help="Extra sedna-gm argument, repeatable (e.g. --gm-arg=--hub-state-url=sqlite:///"
            "/tmp/hub.db). The defaults are the product's, except port, store and heartbeat.",
        ),
    ] = None,
    keep: Annotated[
        bool, typer.Option(help="Keep the GM store, log and LC databases after the run.")
    ] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write every figure to this JSON file.")
    ] = None,
    markdown: Annotated[
        bool, typer.Option(help="Also print the table as Markdown (for bench/README.md).")
    ] = False,
) -> None:
    """Run the benchmark for each node count and print the table."""
    counts = _nodes(nodes)
    config = BenchConfig(
        links_per_worker=links_per_worker,
        connect_batch=connect_batch,
        heartbeat_seconds=heartbeat,
        report_intervals=tuple(_floats(report_intervals, "--report-intervals")),
        load_seconds=load_seconds,
        drain_timeout=drain_timeout,
        apply_concurrency=apply_concurrency,
        drops=drops,
        work_dir=work_dir,
        lc_state_dir=lc_state_dir,
        keep=keep,
        gm_log_level=gm_log_level,
        gm_args=tuple(gm_arg or ()),
    )
    machine = _machine()
    console.print(f"[bold]machine:[/bold] {machine}")
    results: list[RunResult] = []
    started = time.monotonic()
    with console.status("starting") as status:
        for count in counts:
            t0 = time.monotonic()

            def progress(message: str, count: int = count, t0: float = t0) -> None:
                elapsed = time.monotonic() - t0
                console.log(f"N={count}: {message}")
                status.update(f"N={count} [{elapsed:5.0f} s]: {message}")

            results.append(asyncio.run(run_one(count, config, progress)))
    console.print(rich_table(results))
    console.print(f"total time {time.monotonic() - started:.0f} s")
    for result in results:
        for note in result.notes:
            console.print(f"[yellow]N={result.nodes}: {note}[/yellow]")
    for line in verdict(results):
        console.print(line)
    if markdown:
        console.print(markdown_table(results), markup=False, highlight=False, soft_wrap=True)
    if json_out is not None:
        payload = {
            "machine": machine,
            "config": str(config),
            "runs": [r.to_json() for r in results],
        }
        json_out.write_text(json.dumps(payload, indent=2, default=str))


if __name__ == "__main__":
    app()
