"""One benchmark run: start the servers, check they agree, measure, stop them."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from .callers import (
    Caller,
    EchoCaller,
    FloorModelCaller,
    HttpCaller,
    OffloadCaller,
    floor_stats,
    offload_client_kind,
)
from .config import MODEL_NAME, BenchConfig, server_ort_threads
from .load import closed_loop, round_robin
from .model import ensure_model, make_input
from .results import (
    COMPUTE,
    CONCURRENT,
    FLOOR,
    FLOOR_MODEL,
    HTTP,
    OURS,
    OURS_B1,
    OURS_B1_STUBS,
    SEQUENTIAL,
    BenchResult,
    ThroughputRow,
)
from .servers import Noise, Servers, server_stats, set_own_malloc

__all__ = ["BenchConfig", "Progress", "run"]


class Progress(Protocol):
    """Reports what the run is doing; ``log=False`` for frequent counters."""

    def __call__(self, message: str, *, log: bool = True) -> None:
        """Show ``message``."""


@contextlib.contextmanager
def _work_dir(config: BenchConfig) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sedna-bench-ji-", dir=config.work_dir))
    try:
        yield path
    finally:
        if not config.keep:
            shutil.rmtree(path, ignore_errors=True)


def _labels(config: BenchConfig, client_kind: str) -> dict[str, str]:
    return {
        OURS: f"ours: sedna-inference, {client_kind}, batching "
        f"<= {config.max_batch_size} / {config.max_queue_delay_ms:g} ms",
        OURS_B1: "ours, max batch size 1",
        OURS_B1_STUBS: "ours, max batch size 1, bare generated stubs",
        FLOOR_MODEL: "bare gRPC + same model run",
        FLOOR: "transport floor: bare gRPC bytes echo",
        HTTP: "upstream-style HTTP+JSON /predict",
        COMPUTE: "model compute (session.run)",
    }


@dataclass
class _Run:
    """One run's servers, callers and results."""

    config: BenchConfig
    servers: Servers
    result: BenchResult
    x: npt.NDArray[np.float32]
    progress: Progress
    client_kind: str

    def factories(self) -> dict[str, Callable[[], Caller]]:
        """How to build a caller of each path (one per client thread)."""
        ours, ours_b1 = self.servers.ours.port, self.servers.ours_b1.port
        kind, floor = self.client_kind, self.servers.floor_target
        return {
            OURS: lambda: OffloadCaller("127.0.0.1", ours, MODEL_NAME, client=kind),
            OURS_B1: lambda: OffloadCaller("127.0.0.1", ours_b1, MODEL_NAME, client=kind),
            OURS_B1_STUBS: lambda: OffloadCaller("127.0.0.1", ours_b1, MODEL_NAME, client="stubs"),
            FLOOR_MODEL: lambda: FloorModelCaller(floor),
            FLOOR: lambda: EchoCaller(floor),
            HTTP: lambda: HttpCaller(f"{self.servers.http_base}/predict"),
        }

    def sequential(self) -> None:
        """One client, the paths interleaved; model compute from the floor server."""
        config, servers, result, x = self.config, self.servers, self.result, self.x
        callers = {name: factory() for name, factory in self.factories().items()}
        try:
            reference = callers[FLOOR_MODEL](x)
            result.max_abs_diff = max(
                float(np.max(np.abs(callers[name](x) - reference)))
                for name in (OURS, OURS_B1, OURS_B1_STUBS, HTTP)
            )
            if result.max_abs_diff > 1e-4:
                result.notes.append(f"outputs differ by up to {result.max_abs_diff:g}")
            counts = dict.fromkeys(callers, config.requests)
            counts[HTTP] = min(config.http_requests, config.requests)
            floor_stats(servers.floor_target)  # clear the compute samples of the checks
            ours = {OURS: servers.ours, OURS_B1: servers.ours_b1}
            before = {path: server.metrics() for path, server in ours.items()}
            self.progress(
                f"one client, sequential: {sum(counts.values())} requests, interleaved in "
                f"blocks of {config.block}"
            )
            latencies = round_robin(
                callers,
                counts,
                x,
                block=config.block,
                progress=lambda done, total: self.progress(
                    f"one client, sequential: {done}/{total}", log=False
                ),
            )
            # (OURS_B1 and OURS_B1_STUBS share a server: its stats cover both)
            for path, server in ours.items():
                result.latency_server[path] = server_stats(before[path], server.metrics())
            compute = floor_stats(servers.floor_target)
            # the floor server also ran the warm-up requests first: keep the timed ones
            result.latencies_s = {**latencies, COMPUTE: compute[-counts[FLOOR_MODEL] :]}
        finally:
            for caller in callers.values():
                caller.close()

    def concurrent(self) -> None:
        """``clients`` concurrent clients per path, one path after the other."""
        config, servers, factories = self.config, self.servers, self.factories()
        for path in (OURS, OURS_B1, FLOOR_MODEL, FLOOR, HTTP):
            seconds = config.http_seconds if path == HTTP else config.seconds
            label = self.result.labels[path]
            self.progress(f"{config.clients} clients: {label} ({seconds:g} s)")
            ours = {OURS: servers.ours, OURS_B1: servers.ours_b1}.get(path)
            before = ours.metrics() if ours is not None else {}
            load = closed_loop(
                factories[path],
                self.x,
                clients=config.clients,
                seconds=seconds,
                warmup_s=config.warmup_s,
                server_cpu=servers.process(path).cpu_seconds,
            )
            stats = server_stats(before, ours.metrics()) if ours is not None else None
            self.result.throughput.append(ThroughputRow(path, load, stats))


def run(config: BenchConfig, progress: Progress, machine: str) -> BenchResult:
    """Run the whole benchmark once and return what it measured.

    Parameters
    ----------
    config
        The run's settings.
    progress
        Told what the run is doing.
    machine
        Description of the machine, kept in the result.
    """
    started = time.monotonic()
    if config.client_cpus:
        os.sched_setaffinity(0, config.client_cpus)
    if config.malloc_mmap_threshold <= 0:
        os.environ["SEDNA_MALLOC_MMAP_THRESHOLD"] = "0"  # InferenceClient: keep glibc's
    elif not set_own_malloc(config.malloc_mmap_threshold):
        progress("mallopt is not available: the clients keep their malloc settings")
    model = ensure_model(config.cache_dir, config.model_kind)
    client_kind = offload_client_kind()
    settings: dict[str, Any] = {
        key: (sorted(value) if isinstance(value, frozenset) else value)
        for key, value in vars(config).items()
    }
    settings.update(
        offload_client=client_kind, model=model.name, server_ort_threads=server_ort_threads(config)
    )
    result = BenchResult(machine=machine, settings=settings, labels=_labels(config, client_kind))
    with _work_dir(config) as work:
        progress(f"model {model.name}; server logs in {work}")
        servers = Servers.create(config, model, work)
        bench = _Run(config, servers, result, make_input(), progress, client_kind)
        try:
            progress("starting the servers")
            servers.start(config.start_timeout_s)
            pids = [process.pid for process in servers.processes]
            noise = Noise(pids)
            bench.sequential()
            result.other_cpu[SEQUENTIAL] = noise.other_cores()
            if config.throughput:
                noise = Noise(pids)
                bench.concurrent()
                result.other_cpu[CONCURRENT] = noise.other_cores()
        finally:
            servers.stop()
    result.elapsed_s = time.monotonic() - started
    return result
