"""What every worker process shares: its command line, its result file, ``/proc`` memory.

Standard library only (plus :mod:`.model`): the Flower workers run under ``.venv-flower``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["WorkerArgs", "cpu_seconds", "parse_worker_args", "proc_memory_kb", "write_result"]


@dataclass(frozen=True)
class WorkerArgs:
    """One worker's settings (client or server), as the driver passes them."""

    role: str
    host: str
    port: int
    client: int
    clients: int
    params: int
    layers: int
    rounds: int
    """Total rounds, warm-up included."""
    out: Path
    timeout: float


def parse_worker_args(argv: list[str] | None = None) -> WorkerArgs:
    """Parse ``ROLE --port ... --out ...`` (the driver builds these command lines)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client", type=int, default=0)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--params", type=int, required=True)
    parser.add_argument("--layers", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=1800.0)
    ns = parser.parse_args(argv)
    return WorkerArgs(**vars(ns))


def proc_memory_kb(pid: int | str = "self") -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of a process in KiB, from ``/proc/PID/status``."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all its threads)."""
    times = os.times()
    return times.user + times.system


def write_result(path: Path, result: dict[str, Any]) -> None:
    """Write ``result`` as JSON atomically (the driver polls for the file)."""
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)


def now() -> float:
    """``CLOCK_MONOTONIC``: one clock for every process of the machine."""
    return time.monotonic()
