"""``python -m bench.joint_inference``: the joint-inference offload benchmark (see ``--help``)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .config import DEFAULT_MMAP_THRESHOLD
from .model import DEFAULT_MODEL, MODEL_KINDS
from .results import (
    BATCHING_TARGET,
    FLOOR_TARGET,
    HTTP_TARGET,
    details,
    markdown,
    rich_tables,
    verdicts,
)
from .scenario import BenchConfig, run

app = typer.Typer(add_completion=False, rich_markup_mode="rich")
console = Console()
if not console.is_terminal:
    console = Console(width=200)

HELP = "\n\n".join(
    [
        "Benchmark the edge -> cloud offload of joint inference: the same ONNX model (--model; "
        "built and cached by the bench) and the same 3x224x224 float32 input (batch of 1), "
        "side by side in one run, on four local server processes:",
        "[bold]ours[/bold]: the real [bold]sedna-inference[/bold], OIP v2 gRPC ModelInfer with "
        "raw_input_contents, called through sedna.service.oip_client.InferenceClient (as "
        "JointInference does), once with dynamic batching and once with max batch size 1; "
        "[bold]http[/bold]: an upstream-style FastAPI/uvicorn POST /{service}/predict with "
        "JSON lists of floats, called with requests; [bold]floor[/bold]: a bare gRPC server "
        "echoing the same bytes (transport floor) and running the same model on them.",
        "Phases: one client, the paths interleaved in blocks of --block requests (p50/p90/p99, "
        "offload overhead = p50 latency - p50 model compute); then N concurrent clients per path "
        "(closed loop: throughput and latency).",
        f"Targets: p50 offload overhead <= {FLOOR_TARGET:g}x the floor's and HTTP+JSON's >= "
        f"{HTTP_TARGET:g}x ours; with 32 clients, batching >= {BATCHING_TARGET:g}x the "
        "throughput of batch size 1. The default run (vgg) takes about 5 minutes on 2 cores, "
        "--quick about 30 s.",
    ]
)


def _cpus(value: str | None, option: str) -> frozenset[int] | None:
    if not value:
        return None
    try:
        cpus = frozenset(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"{option} {value!r}: expected CPU numbers like 0,1") from None
    available = os.sched_getaffinity(0)
    if not cpus or not cpus <= available:
        raise typer.BadParameter(f"{option}: CPUs must be among {sorted(available)}")
    return cpus


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


@app.command(help=HELP)
def main(
    *,
    quick: Annotated[
        bool,
        typer.Option(
            help="About 30 s: 200 sequential requests per gRPC path (20 HTTP), 3 s per "
            "concurrent run. Explicit options still win."
        ),
    ] = False,
    requests: Annotated[
        int | None,
        typer.Option(min=1, help="Sequential requests per gRPC path (default 1000; quick 200)."),
    ] = None,
    http_requests: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Sequential requests to HTTP+JSON (slow), at most --requests "
            "(default 100; quick 20).",
        ),
    ] = None,
    block: Annotated[
        int,
        typer.Option(
            min=1,
            help="Sequential phase: consecutive requests of one path before the next path's "
            "turn (1: interleaved request by request, which favours servers visited by two "
            "paths: they stay warm).",
        ),
    ] = 10,
    model: Annotated[
        str,
        typer.Option(
            help="vgg: VGG-style big model, conv stem + 170 MB fully connected head "
            "(weight-bound; the default). cnn: a small conv-only CNN (compute-bound, "
            "~1 ms). mlp: a weight-bound perceptron (154 MB). The same model serves every path.",
        ),
    ] = DEFAULT_MODEL,
    clients: Annotated[
        int, typer.Option(min=1, help="Concurrent clients (threads) in the throughput phase.")
    ] = 32,
    seconds: Annotated[
        float | None,
        typer.Option(min=0.5, help="Measured seconds per concurrent run (default 10; quick 3)."),
    ] = None,
    warmup: Annotated[
        float, typer.Option(min=0.0, help="Unmeasured seconds before each concurrent window.")
    ] = 1.0,
    max_batch_size: Annotated[
        int, typer.Option(min=2, help="sedna-inference --max-batch-size of the batching server.")
    ] = 32,
    max_queue_delay_ms: Annotated[
        float, typer.Option(min=0.0, help="sedna-inference --max-queue-delay-ms (both servers).")
    ] = 2.0,
    ort_threads: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="ONNX Runtime intra-op threads of every server (sedna-inference "
            "--intra-op-threads); default: sedna-inference's own default, the server CPUs "
            "minus one (at least 1); 0 = ORT's choice (one per physical core).",
        ),
    ] = None,
    ort_spinning: Annotated[
        bool,
        typer.Option(
            help="Let idle ONNX Runtime threads spin in every server (ORT's default; "
            "sedna-inference's default is --no-ort-spinning).",
        ),
    ] = False,
    malloc_mmap_threshold: Annotated[
        int,
        typer.Option(
            min=0,
            help="glibc malloc mmap threshold in bytes for every process (servers by "
            "MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_, the clients by mallopt); default: "
            "what sedna-inference and InferenceClient set themselves (16 MiB); 0 keeps "
            "glibc's defaults everywhere (SEDNA_MALLOC_MMAP_THRESHOLD=0 for ours).",
        ),
    ] = DEFAULT_MMAP_THRESHOLD,
    server_cpus: Annotated[
        str | None,
        typer.Option(help="Pin every server process to these CPUs, e.g. 1 (default: all)."),
    ] = None,
    client_cpus: Annotated[
        str | None,
        typer.Option(help="Pin the benchmark's clients to these CPUs, e.g. 0 (default: all)."),
    ] = None,
    throughput: Annotated[
        bool, typer.Option(help="Run the concurrent-clients phase (the batching target).")
    ] = True,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Where the ONNX model is cached (default ~/.cache/sedna-bench)."),
    ] = None,
    work_dir: Annotated[
        Path | None, typer.Option(help="Parent of the run's folder (server logs); default $TMPDIR.")
    ] = None,
    keep: Annotated[bool, typer.Option(help="Keep the server logs after the run.")] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write every figure to this JSON file.")
    ] = None,
    markdown_out: Annotated[
        bool,
        typer.Option("--markdown", help="Also print the tables as Markdown (bench/README.md)."),
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(help="Exit with status 1 when a target is missed (n/a ones do not count)."),
    ] = False,
) -> None:
    """Run the benchmark and print the tables and the verdicts."""
    if model not in MODEL_KINDS:
        raise typer.BadParameter(f"--model {model!r}: expected one of {', '.join(MODEL_KINDS)}")
    n = requests if requests is not None else (200 if quick else 1000)
    config = BenchConfig(
        requests=n,
        http_requests=http_requests if http_requests is not None else (20 if quick else 100),
        block=block,
        clients=clients,
        seconds=seconds if seconds is not None else (3.0 if quick else 10.0),
        http_seconds=seconds if seconds is not None else (3.0 if quick else 10.0),
        warmup_s=warmup,
        max_batch_size=max_batch_size,
        max_queue_delay_ms=max_queue_delay_ms,
        ort_threads=ort_threads,
        ort_spinning=ort_spinning,
        malloc_mmap_threshold=malloc_mmap_threshold,
        model_kind=model,
        server_cpus=_cpus(server_cpus, "--server-cpus"),
        client_cpus=_cpus(client_cpus, "--client-cpus"),
        throughput=throughput,
        cache_dir=cache_dir,
        work_dir=work_dir,
        keep=keep,
    )
    machine = _machine()
    console.print(f"[bold]machine:[/bold] {machine}")
    t0 = time.monotonic()
    with console.status("starting") as status:

        def progress(message: str, *, log: bool = True) -> None:
            status.update(f"[{time.monotonic() - t0:5.0f} s] {message}")
            if log:
                console.log(message)

        result = run(config, progress, machine)
    for table in rich_tables(result):
        console.print(table)
    for line in details(result):
        console.print(line, markup=False, highlight=False)
    if markdown_out:
        console.print(markdown(result), markup=False, highlight=False, soft_wrap=True)
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_json(), indent=2, default=str))
    if strict and not all(v.passed for v in verdicts(result) if v.applicable):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
