"""``python -m bench.federated_learning``: the federated-learning round benchmark (``--help``)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .model import layer_shapes, model_bytes
from .results import BANDWIDTH_TARGET, MEMORY_TARGET, RATE_TARGET, markdown, notes, rich_table
from .results import verdicts as target_verdicts
from .runner import (
    FLOWER,
    REPO,
    SYSTEMS,
    WEBSOCKET,
    RunSpec,
    SystemResult,
    flower_python,
    merge,
    run_system,
)

app = typer.Typer(add_completion=False, rich_markup_mode="rich")
console = Console()
if not console.is_terminal:
    console = Console(width=220)

FLOWER_BUILD: str = "scripts/flower_venv.sh"

HELP = "\n\n".join(
    [
        "Federated-learning rounds side by side, in one run: K real client processes and one "
        "real server process per system on loopback, the same float32 model (P values in "
        "--layers tensors), FedAvg, a warm-up round then --rounds measured rounds. Each client "
        "'trains' by adding its own constant to the global weights, so the final aggregate is "
        "known exactly and every system's is checked.",
        "[bold]ours[/bold]: sedna-aggregator + AggregationClient (join, push, pull per round), "
        "the weights on the aggregator's bulk port (the default); [bold]ours-grpc[/bold]: the "
        "same with the bulk port off (gRPC tensor streams, AggregationClient(bulk=False)); "
        "[bold]flower[/bold]: Flower 1.41.0 start_server/start_client (grpc-bidi, FedAvg) in "
        ".venv-flower (built on first use by scripts/flower_venv.sh); [bold]websocket[/bold]: "
        "upstream Sedna's websocket + JSON-lists protocol (aiohttp), the server waiting for all "
        "K; [bold]floor[/bold]: a raw TCP socket moving the same bytes (K uploads, K downloads).",
        f"Targets: ours >= {RATE_TARGET:g}x Flower's round rate; ours' effective bandwidth >= "
        f"{BANDWIDTH_TARGET:.0%} of the raw socket's; aggregator peak RSS < {MEMORY_TARGET:g}x "
        "one model. Defaults (K=8, P=25M) take 5-15 minutes on 2 shared cores.",
    ]
)


def _machine() -> str:
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


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def _git_state() -> str:
    """HEAD, plus a digest of the uncommitted aggregator and SDK changes (the lead can tell
    which working tree a result was measured on)."""
    paths = ["services/aggregator", "sdk/sedna"]

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout

    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        changed = git("status", "--porcelain", "--", *paths).splitlines()
        if not changed:
            return head
        digest = hashlib.sha256(git("diff", "HEAD", "--", *paths).encode())
        for name in sorted(git("ls-files", "--others", "--exclude-standard", "--", *paths).split()):
            with contextlib.suppress(OSError):
                digest.update(name.encode() + (REPO / name).read_bytes())
    except OSError:
        return "unknown"
    return (
        f"{head} + {len(changed)} uncommitted file(s) in services/aggregator, sdk/sedna "
        f"(working-tree digest {digest.hexdigest()[:12]})"
    )


def _ensure_flower() -> str | None:
    """Build .venv-flower when missing; the reason it is unusable, or None."""
    if flower_python().exists():
        return None
    console.log(f"building .venv-flower (flwr==1.41.0) with {FLOWER_BUILD} ...")
    done = subprocess.run(
        ["bash", FLOWER_BUILD], cwd=REPO, capture_output=True, text=True, check=False
    )
    if done.returncode != 0 or not flower_python().exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return f"could not build .venv-flower ({' | '.join(tail)}); run: bash {FLOWER_BUILD}"
    return None


def _systems(only: str | None) -> list[str]:
    if not only:
        return list(SYSTEMS)
    chosen = [s.strip() for s in only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SYSTEMS))
    if unknown or not chosen:
        raise typer.BadParameter(f"--only {only!r}: expected a comma list of {', '.join(SYSTEMS)}")
    return [s for s in SYSTEMS if s in chosen]


@app.command(help=HELP)
def main(  # noqa: PLR0915 - one linear CLI flow
    *,
    clients: Annotated[int, typer.Option(min=1, help="K: client processes per system.")] = 8,
    params: Annotated[
        int, typer.Option(min=1, help="P: float32 values per model (25M = 100 MB).")
    ] = 25_000_000,
    layers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Tensors P is split into: weight matrices of varied sizes alternating with "
            "small bias vectors.",
        ),
    ] = 40,
    rounds: Annotated[int, typer.Option(min=1, help="Measured rounds per system.")] = 3,
    warmup: Annotated[int, typer.Option(min=0, help="Unmeasured rounds first.")] = 1,
    repeat: Annotated[
        int,
        typer.Option(
            min=1,
            help="Run the whole sequence of systems this many times, in alternating order "
            "(forward, reversed...), and pool each system's rounds: machine noise then hits "
            "every system alike.",
        ),
    ] = 1,
    only: Annotated[
        str | None,
        typer.Option(help=f"Comma list of systems to run (default all: {','.join(SYSTEMS)})."),
    ] = None,
    ws_params: Annotated[
        int,
        typer.Option(
            min=1,
            help="Cap on P for websocket + JSON: its JSON text and Python float lists need "
            "tens to hundreds of times the model's memory per process and seconds of CPU per "
            "million values (25M "
            "values with K=8 would need ~25 GB and the best part of an hour per round). Its "
            "row says so and extrapolates the round time to P.",
        ),
    ] = 250_000,
    ws_rounds: Annotated[
        int | None,
        typer.Option(min=1, help="Measured rounds of websocket + JSON (default: --rounds)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=1.0, help="Seconds one system may take, all rounds included.")
    ] = 1800.0,
    build_flower: Annotated[
        bool, typer.Option(help=f"Build .venv-flower with {FLOWER_BUILD} when it is missing.")
    ] = True,
    work_dir: Annotated[
        Path | None, typer.Option(help="Parent of the run's folder (logs); default $TMPDIR.")
    ] = None,
    keep: Annotated[bool, typer.Option(help="Keep the logs and result files.")] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write every figure to this JSON file.")
    ] = None,
    markdown_out: Annotated[
        bool, typer.Option("--markdown", help="Also print the table as Markdown (bench/README.md).")
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            help="Exit 1 when a target is missed or an aggregate is wrong (n/a ones pass)."
        ),
    ] = False,
) -> None:
    """Run the systems one after another and print the table and the verdicts."""
    systems = _systems(only)
    try:
        shapes = layer_shapes(params, layers)
        layer_shapes(min(params, ws_params), layers)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    machine = _machine()
    console.print(f"[bold]machine:[/bold] {machine}")
    console.print(f"[bold]before:[/bold] {_load()}; aggregator code at {_git_state()}")
    console.print(
        f"K={clients} clients, P={params:,} float32 in {layers} tensors "
        f"({model_bytes(shapes) / 1e6:,.0f} MB per model; largest tensor "
        f"{max(shapes, key=lambda s: s[0] * (s[1] if len(s) > 1 else 1))}), "
        f"{warmup} warm-up + {rounds} measured rounds per system: {', '.join(systems)}"
    )
    parent = Path(tempfile.mkdtemp(prefix="sedna-bench-fl-", dir=work_dir))
    runs: dict[str, list[SystemResult]] = {system: [] for system in systems}
    t0 = time.monotonic()
    for attempt in range(repeat):
        order = systems if attempt % 2 == 0 else systems[::-1]
        for system in order:
            spec = RunSpec(
                clients=clients,
                params=min(params, ws_params) if system == WEBSOCKET else params,
                layers=layers,
                rounds=(ws_rounds or rounds) if system == WEBSOCKET else rounds,
                warmup=warmup,
                timeout=timeout,
                work_dir=parent / f"run{attempt + 1}",
            )
            if system == FLOWER and build_flower:
                reason = _ensure_flower()
            elif system == FLOWER and not flower_python().exists():
                reason = f".venv-flower is missing; run: bash {FLOWER_BUILD}"
            else:
                reason = None
            if reason is not None:
                failed = SystemResult(system, spec.params, clients, spec.model_bytes, error=reason)
                runs[system].append(failed)
                console.log(f"{system}: skipped: {reason}")
                continue
            console.log(
                f"{system}: running (P={spec.params:,}, {spec.total_rounds} rounds; "
                f"pass {attempt + 1}/{repeat})"
            )
            result = run_system(system, spec, console.log)
            runs[system].append(result)
            status = "FAILED: " + result.error if result.error else f"done in {result.wall_s:.0f} s"
            console.log(f"{system}: {status}")
    results = [merge(runs[system]) for system in systems]
    console.print(f"[bold]after:[/bold] {_load()}; total {time.monotonic() - t0:.0f} s")
    console.print(rich_table(results, f"Federated-learning round, K={clients}, P={params:,}"))
    for line in notes(results, params):
        console.print(line, markup=False, highlight=False)
    verdicts = target_verdicts(results)
    console.print("[bold]Targets[/bold]")
    for v in verdicts:
        console.print(f"  {v.verdict:7} {v.name} ({v.target}): {v.measured}", markup=False)
    wrong = [r.system for r in results if r.correct is False]
    if wrong:
        console.print(f"WRONG AGGREGATE: {', '.join(wrong)}", markup=False)
    if markdown_out:
        console.print(markdown(results, params), markup=False, highlight=False, soft_wrap=True)
    if json_out is not None:
        report = {
            "machine": machine,
            "git": _git_state(),
            "settings": {
                "clients": clients,
                "params": params,
                "layers": layers,
                "rounds": rounds,
                "warmup": warmup,
                "ws_params": ws_params,
                "repeat": repeat,
            },
            "systems": [r.to_json() for r in results],
            "verdicts": [
                {"name": v.name, "target": v.target, "measured": v.measured, "passed": v.passed}
                for v in verdicts
            ],
        }
        json_out.write_text(json.dumps(report, indent=2))
    if keep:
        console.print(f"logs and result files kept in {parent}")
    else:
        shutil.rmtree(parent, ignore_errors=True)
    if strict and (wrong or any(v.passed is False for v in verdicts)):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
