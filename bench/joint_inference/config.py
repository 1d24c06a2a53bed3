"""Settings of one benchmark run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["MODEL_NAME", "BenchConfig"]

MODEL_NAME = "big-model"
"""The model (and JointInferenceService) name the servers use."""


@dataclass(frozen=True)
class BenchConfig:
    """Settings of one run (see ``python -m bench.joint_inference --help``)."""

    requests: int = 1000
    http_requests: int = 100
    clients: int = 32
    seconds: float = 10.0
    http_seconds: float = 10.0
    warmup_s: float = 1.0
    max_batch_size: int = 32
    max_queue_delay_ms: float = 2.0
    ort_threads: int = 0
    ort_spinning: bool = True
    malloc_mmap_threshold: int = 0
    model_kind: str = "cnn"
    patch_ours_ort: bool = False
    server_cpus: frozenset[int] | None = None
    client_cpus: frozenset[int] | None = None
    throughput: bool = True
    cache_dir: Path | None = None
    work_dir: Path | None = None
    keep: bool = False
    start_timeout_s: float = 90.0
