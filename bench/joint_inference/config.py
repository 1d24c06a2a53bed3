"""Settings of one benchmark run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_MMAP_THRESHOLD", "MODEL_NAME", "BenchConfig", "server_ort_threads"]

DEFAULT_MMAP_THRESHOLD = 16 * 1024 * 1024
"""What ``sedna-inference`` and ``InferenceClient`` set by default (sedna.runtime.memory)."""

MODEL_NAME = "big-model"
"""The model (and JointInferenceService) name the servers use."""


@dataclass(frozen=True)
class BenchConfig:
    """Settings of one run (see ``python -m bench.joint_inference --help``)."""

    requests: int = 1000
    http_requests: int = 100
    block: int = 10
    clients: int = 32
    seconds: float = 10.0
    http_seconds: float = 10.0
    warmup_s: float = 1.0
    max_batch_size: int = 32
    max_queue_delay_ms: float = 2.0
    ort_threads: int | None = None
    ort_spinning: bool = False
    malloc_mmap_threshold: int = DEFAULT_MMAP_THRESHOLD
    model_kind: str = "vgg"
    server_cpus: frozenset[int] | None = None
    client_cpus: frozenset[int] | None = None
    throughput: bool = True
    cache_dir: Path | None = None
    work_dir: Path | None = None
    keep: bool = False
    start_timeout_s: float = 90.0


def server_ort_threads(config: BenchConfig) -> int:
    """ONNX Runtime intra-op threads of every server: ``sedna-inference``'s default when unset.

    That default is the CPUs the process may use minus one, at least 1
    (``sedna_inference.settings.default_intra_op_threads``, not imported: the bench talks
    to the server as a separate program).
    """
    if config.ort_threads is not None:
        return config.ort_threads
    cpus = len(os.sched_getaffinity(0))
    if config.server_cpus:
        cpus = len(config.server_cpus)
    return max(1, cpus - 1)
