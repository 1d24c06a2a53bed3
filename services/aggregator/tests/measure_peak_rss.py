"""Peak RSS of a real ``sedna-aggregator`` process aggregating K updates (not a test).

Starts ``sedna-aggregator`` (no checkpoints), then K client processes that each join with
:class:`sedna.service.aggregation_client.AggregationClient`, push an update of ``--params``
float32 parameters for each of ``--rounds`` rounds and pull the aggregate after each. When
the job is done it prints the server's ``VmHWM`` (peak resident set) and ``VmRSS`` from
``/proc/<pid>/status``, its RSS before the first round, and the ratios to one model's size.

Run::

    .venv/bin/python services/aggregator/tests/measure_peak_rss.py --clients 8 --params 25000000

The model is split into layers like a ResNet-50 (the largest about 10% of it), so the bound
``global + running sum + max_concurrent_updates x largest layer`` is about 2.2 models plus the
interpreter, gRPC and chunk buffers.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from sedna.service.aggregation_client import AggregationClient

SID = "default/fl-rss"


def layer_sizes(params: int) -> list[int]:
    """Layer sizes adding up to ``params``: a large one (~10%), mid ones and biases."""
    fractions = [0.10, 0.08, 0.08, 0.06, 0.06, 0.06, 0.05, 0.05, 0.05, 0.05] + [0.035] * 9
    sizes = [int(params * f) for f in fractions]
    biases = [512] * 20
    sizes += biases
    sizes.append(params - sum(sizes))
    assert all(s > 0 for s in sizes)
    return sizes


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def client(port: int, index: int, params: int, rounds: int, out: Any) -> None:
    rng = np.random.default_rng(index)
    agg = AggregationClient("127.0.0.1", port, timeout=600.0)
    agg.join(SID, f"node-{index}", sample_count=10 + index)
    for r in range(1, rounds + 1):
        weights = [rng.standard_normal(n, dtype=np.float32) for n in layer_sizes(params)]
        agg.push(r, weights, 10 + index, timeout=600.0)
        del weights
        result = agg.pull(r, timeout=600.0)
        assert result.round == r
        del result
    agg.close()
    out.put(index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--params", type=int, default=25_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-concurrent-updates", type=int, default=2)
    parser.add_argument(
        "--malloc-mmap-threshold",
        type=int,
        default=None,
        help="set glibc's MALLOC_MMAP_THRESHOLD_ for the server (bytes): blocks above it are "
        "mmapped and given back on free, so RSS follows live memory (sedna's tune_malloc then "
        "leaves malloc alone)",
    )
    args = parser.parse_args()
    script = shutil.which("sedna-aggregator", path=str(Path(sys.executable).parent))
    assert script, "sedna-aggregator is not installed next to the interpreter"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEDNA_")}
    if args.malloc_mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)
    command = [script, "--port", "0", "--metrics-port", "0"]
    command += ["--min-participants", str(args.clients), "--exit-round", str(args.rounds)]
    command += ["--round-timeout-seconds", "none"]
    command += ["--max-concurrent-updates", str(args.max_concurrent_updates)]
    server = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert server.stderr is not None
        port = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = server.stderr.readline()
            assert line, "sedna-aggregator exited before it started"
            record = json.loads(line)
            if record.get("message") == "gRPC server started":
                port = int(record["port"])
                break
        assert port, "sedna-aggregator did not start in time"
        idle_kb = status_kb(server.pid, "VmRSS")
        context = multiprocessing.get_context("spawn")
        done = context.Queue()
        workers = [
            context.Process(target=client, args=(port, k, args.params, args.rounds, done))
            for k in range(args.clients)
        ]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=1800)
            assert worker.exitcode == 0, f"client exited with {worker.exitcode}"
        elapsed = time.monotonic() - started
        peak_kb = status_kb(server.pid, "VmHWM")
        rss_kb = status_kb(server.pid, "VmRSS")
    finally:
        server.terminate()
        server.wait(timeout=30)
    model = args.params * 4
    report = {
        "clients": args.clients,
        "params": args.params,
        "model_mb": model / 1e6,
        "largest_layer_mb": max(layer_sizes(args.params)) * 4 / 1e6,
        "rounds": args.rounds,
        "max_concurrent_updates": args.max_concurrent_updates,
        "malloc_mmap_threshold": args.malloc_mmap_threshold,
        "seconds": round(elapsed, 1),
        "idle_rss_mb": idle_kb * 1024 / 1e6,
        "peak_rss_mb (VmHWM)": peak_kb * 1024 / 1e6,
        "final_rss_mb": rss_kb * 1024 / 1e6,
        "peak_over_model": round(peak_kb * 1024 / model, 2),
        "peak_minus_idle_over_model": round((peak_kb - idle_kb) * 1024 / model, 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
