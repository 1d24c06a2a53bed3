"""The four server processes of a run, and what is read from them."""

from __future__ import annotations

import ctypes
import math
import os
import re
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import requests

from sedna.api.oip.v2 import grpc_service_pb2 as pb
from sedna.api.oip.v2 import grpc_service_pb2_grpc as pb_grpc

from .config import MODEL_NAME, BenchConfig, server_ort_threads
from .processes import (
    ServerProcess,
    free_port,
    machine_busy_seconds,
    proc_cpu_seconds,
    sedna_inference_command,
)
from .results import FLOOR, FLOOR_MODEL, HTTP, OURS, OURS_B1, OURS_B1_STUBS, ServerStats

__all__ = ["Noise", "OursServer", "Servers", "server_stats", "set_own_malloc"]


class OursServer:
    """``sedna-inference`` serving the model, with one batching configuration.

    Parameters
    ----------
    name
        Label used in errors.
    model
        The ``.onnx`` file.
    log
        Where the server's output goes.
    config
        The run's settings (queue delay, ORT experiment, malloc, CPUs).
    batch
        ``--max-batch-size``.
    """

    def __init__(self, name: str, model: Path, log: Path, config: BenchConfig, batch: int) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        command = [
            *sedna_inference_command(),
            "--model-name",
            MODEL_NAME,
            "--model-path",
            str(model),
            "--port",
            str(self.port),
            "--metrics-port",
            str(self.metrics_port),
            "--max-batch-size",
            str(batch),
            "--max-queue-delay-ms",
            f"{config.max_queue_delay_ms:g}",
            "--log-level",
            "WARNING",
            "--drain-seconds",
            "1",
            "--intra-op-threads",
            str(server_ort_threads(config)),
            "--ort-spinning" if config.ort_spinning else "--no-ort-spinning",
        ]
        self.process = ServerProcess(
            name,
            command,
            log,
            cpus=_cpus(config.server_cpus),
            env=_malloc_env(config.malloc_mmap_threshold),
        )

    def ready(self) -> bool:
        """OIP ``ModelReady`` of the benchmark's model (raises while the port is closed)."""
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            ready: bool = stub.ModelReady(pb.ModelReadyRequest(name=MODEL_NAME), timeout=1).ready
            return ready

    def metrics(self) -> dict[str, float]:
        """Sums of the ``sedna_inference_*`` histogram series (all labels together)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        sums: dict[str, float] = {}
        for line in text.splitlines():
            match = re.match(r"^(sedna_inference_\w+_(?:sum|count))(?:\{[^}]*\})?\s+(\S+)$", line)
            if match:
                sums[match.group(1)] = sums.get(match.group(1), 0.0) + float(match.group(2))
        return sums


def _malloc_env(threshold: int) -> dict[str, str]:
    """glibc malloc settings for every server: large buffers from the heap, kept.

    0 keeps glibc's defaults everywhere, ``sedna-inference`` included (it raises the
    threshold itself unless told not to).
    """
    if threshold <= 0:
        return {"SEDNA_MALLOC_MMAP_THRESHOLD": "0"}
    return {
        "MALLOC_MMAP_THRESHOLD_": str(threshold),
        "MALLOC_TRIM_THRESHOLD_": str(4 * threshold),
    }


def set_own_malloc(threshold: int) -> bool:
    """The same for this (client) process, through ``mallopt``; False where not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = bool(libc.mallopt(m_mmap_threshold, threshold) == 1)
        return ok and bool(libc.mallopt(m_trim_threshold, 4 * threshold) == 1)
    except (OSError, AttributeError):
        return False


def _module(name: str) -> list[str]:
    return [sys.executable, "-m", f"{__package__}.{name}"]


def _cpus(cpus: frozenset[int] | None) -> set[int] | None:
    return set(cpus) if cpus else None


def server_stats(before: dict[str, float], after: dict[str, float]) -> ServerStats:
    """``sedna-inference`` histogram deltas between two :meth:`OursServer.metrics` reads."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = delta("sedna_inference_batch_size_count")
    requests_ = delta("sedna_inference_queue_seconds_count")
    return ServerStats(
        requests=int(requests_),
        batches=int(batches),
        mean_batch=delta("sedna_inference_batch_size_sum") / batches if batches else math.nan,
        mean_queue_ms=(
            delta("sedna_inference_queue_seconds_sum") / requests_ * 1000 if requests_ else math.nan
        ),
        mean_compute_ms=(
            delta("sedna_inference_compute_seconds_sum") / batches * 1000 if batches else math.nan
        ),
    )


class Noise:
    """CPU used by processes other than the benchmark's own, since creation."""

    def __init__(self, pids: list[int]) -> None:
        self._pids = pids
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        own = sum(proc_cpu_seconds(pid) for pid in self._pids)
        times = os.times()
        return time.monotonic(), machine_busy_seconds(), own + times.user + times.system

    def other_cores(self) -> float:
        """Average cores used by everything else on the machine (the noise check)."""
        t0, busy0, own0 = self._start
        t1, busy1, own1 = self._sample()
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / max(t1 - t0, 1e-9)


def grpc_ready(target: str) -> Callable[[], bool]:
    def ready() -> bool:
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=1)
        return True

    return ready


@dataclass
class Servers:
    """The four server processes of a run."""

    ours: OursServer
    ours_b1: OursServer
    http: ServerProcess
    floor: ServerProcess
    http_base: str
    floor_target: str

    @classmethod
    def create(cls, config: BenchConfig, model: Path, work: Path) -> Servers:
        http_port, floor_port = free_port(), free_port()
        common = ["--model", str(model), "--threads", str(server_ort_threads(config))]
        if not config.ort_spinning:
            common.append("--no-spinning")
        cpus = _cpus(config.server_cpus)
        env = _malloc_env(config.malloc_mmap_threshold)
        return cls(
            ours=OursServer(
                "sedna-inference (batching)",
                model,
                work / "ours.log",
                config,
                config.max_batch_size,
            ),
            ours_b1=OursServer("sedna-inference (batch 1)", model, work / "ours-b1.log", config, 1),
            http=ServerProcess(
                "HTTP+JSON server",
                [
                    *_module("http_server"),
                    *common,
                    "--port",
                    str(http_port),
                    "--service",
                    MODEL_NAME,
                ],
                work / "http.log",
                cpus=cpus,
                env=env,
            ),
            floor=ServerProcess(
                "floor server",
                [*_module("floor_server"), *common, "--port", str(floor_port)],
                work / "floor.log",
                cpus=cpus,
                env=env,
            ),
            http_base=f"http://127.0.0.1:{http_port}/{MODEL_NAME}",
            floor_target=f"127.0.0.1:{floor_port}",
        )

    @property
    def processes(self) -> list[ServerProcess]:
        return [self.ours.process, self.ours_b1.process, self.http, self.floor]

    def process(self, path: str) -> ServerProcess:
        """The server process behind ``path``."""
        return {
            OURS: self.ours.process,
            OURS_B1: self.ours_b1.process,
            OURS_B1_STUBS: self.ours_b1.process,
            HTTP: self.http,
            FLOOR: self.floor,
            FLOOR_MODEL: self.floor,
        }[path]

    def start(self, within: float) -> None:
        """Start all four, then wait until each serves (``within`` seconds each)."""
        for process in self.processes:
            process.start()
        for ours in (self.ours, self.ours_b1):
            ours.process.wait_ready(ours.ready, within)
        self.http.wait_ready(lambda: requests.get(self.http_base, timeout=1).ok, within)
        self.floor.wait_ready(grpc_ready(self.floor_target), within)

    def stop(self) -> None:
        """Stop all four."""
        for process in self.processes:
            process.stop()
