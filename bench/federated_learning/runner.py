"""Runs one system: its server process, K client processes, and what they measured."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bench.joint_inference.processes import (
    ServerProcess,
    free_port,
    machine_busy_seconds,
    machine_steal_seconds,
    proc_cpu_seconds,
)

from .common import proc_memory_kb
from .model import TOLERANCE, layer_shapes, model_bytes

__all__ = [
    "FLOOR",
    "FLOWER",
    "OURS",
    "OURS_GRPC",
    "SYSTEMS",
    "WEBSOCKET",
    "RunSpec",
    "SystemResult",
    "flower_python",
    "merge",
    "run_system",
]

REPO: Final = Path(__file__).resolve().parents[2]
OURS: Final = "ours"
OURS_GRPC: Final = "ours-grpc"
FLOWER: Final = "flower"
WEBSOCKET: Final = "websocket"
FLOOR: Final = "floor"
SYSTEMS: Final = (FLOOR, OURS, OURS_GRPC, FLOWER, WEBSOCKET)
_AGGREGATOR_SYSTEMS: Final = (OURS, OURS_GRPC)
LABELS: Final = {
    OURS: "ours (sedna-aggregator, bulk port: the default)",
    OURS_GRPC: "ours, gRPC tensor streams only (AggregationClient(bulk=False))",
    FLOWER: "Flower 1.41.0 (grpc-bidi, FedAvg)",
    WEBSOCKET: "upstream-style websocket + JSON",
    FLOOR: "raw TCP socket floor",
}
_MODULES: Final = {
    FLOWER: "bench.federated_learning.flower_app",
    WEBSOCKET: "bench.federated_learning.ws",
    FLOOR: "bench.federated_learning.floor",
    OURS: "bench.federated_learning.ours",
    OURS_GRPC: "bench.federated_learning.ours_grpc",
}


@dataclass(frozen=True)
class RunSpec:
    """What one system runs: K clients, P parameters in L layers, warm-up + measured rounds."""

    clients: int
    params: int
    layers: int
    rounds: int
    warmup: int
    timeout: float
    work_dir: Path

    @property
    def total_rounds(self) -> int:
        """Rounds each client runs, warm-up included."""
        return self.warmup + self.rounds

    @property
    def model_bytes(self) -> int:
        """One model's float32 bytes."""
        return model_bytes(layer_shapes(self.params, self.layers))


@dataclass
class SystemResult:
    """What one system's run measured (times in seconds, memory in KiB)."""

    system: str
    params: int
    clients: int
    model_bytes: int
    round_times: list[float] = field(default_factory=list)
    """Measured rounds (warm-up dropped): first upload start -> last client has the aggregate."""
    window_s: float = 0.0
    """From the start of the first measured round to the end of the last."""
    idle_rss_kb: int = 0
    peak_rss_kb: int = 0
    max_abs_error: float | None = None
    wire_bytes_per_round: int | None = None
    """Bytes on the wire per round when they differ from the payload (JSON text)."""
    other_cores: float | None = None
    steal_share: float | None = None
    """Share of the machine's CPU time the hypervisor gave to other guests meanwhile
    (``/proc/stat`` steal, counted in :attr:`other_cores` too): a noisy host."""
    server_cpu_s: float | None = None
    """Server CPU from readiness to the end (all rounds, warm-up included)."""
    client_cpu_s: float | None = None
    """CPU of all K client processes, start to exit."""
    total_rounds: int = 0
    """CPU other processes of the machine used meanwhile, in cores (noise check)."""
    wall_s: float = 0.0
    error: str | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        """The run completed and its aggregate checked out (or has nothing to check)."""
        return self.error is None and self.round_times != [] and self.correct is not False

    @property
    def correct(self) -> bool | None:
        """Whether the final aggregate equals the expected FedAvg; None: nothing to check."""
        if self.max_abs_error is None:
            return None
        return self.max_abs_error <= TOLERANCE

    @property
    def payload_bytes_per_round(self) -> int:
        """K uploads plus K downloads of one model: what every transport must move."""
        return 2 * self.clients * self.model_bytes

    def to_json(self) -> dict[str, Any]:
        """Plain values for ``--json``."""
        return {
            "system": self.system,
            "label": LABELS[self.system],
            "params": self.params,
            "clients": self.clients,
            "model_bytes": self.model_bytes,
            "round_times_s": self.round_times,
            "window_s": self.window_s,
            "payload_bytes_per_round": self.payload_bytes_per_round,
            "wire_bytes_per_round": self.wire_bytes_per_round,
            "idle_rss_kb": self.idle_rss_kb,
            "peak_rss_kb": self.peak_rss_kb,
            "max_abs_error": self.max_abs_error,
            "correct": self.correct,
            "other_cores": self.other_cores,
            "steal_share": self.steal_share,
            "server_cpu_s": self.server_cpu_s,
            "client_cpu_s": self.client_cpu_s,
            "total_rounds": self.total_rounds,
            "wall_s": self.wall_s,
            "error": self.error,
            "note": self.note,
        }


def merge(runs: list[SystemResult]) -> SystemResult:
    """One system's repeated runs as one result: all measured rounds pooled, worst memory,
    worst error, worst hypervisor steal; the first failure wins."""
    first = runs[0]
    failed = [r for r in runs if r.error is not None]
    if failed:
        return failed[0]
    errors = [r.max_abs_error for r in runs if r.max_abs_error is not None]
    others = [r.other_cores for r in runs if r.other_cores is not None]
    steals = [r.steal_share for r in runs if r.steal_share is not None]
    wires = [r.wire_bytes_per_round for r in runs if r.wire_bytes_per_round is not None]
    return SystemResult(
        system=first.system,
        params=first.params,
        clients=first.clients,
        model_bytes=first.model_bytes,
        round_times=[t for r in runs for t in r.round_times],
        window_s=sum(r.window_s for r in runs),
        idle_rss_kb=min(r.idle_rss_kb for r in runs),
        peak_rss_kb=max(r.peak_rss_kb for r in runs),
        max_abs_error=max(errors) if errors else None,
        wire_bytes_per_round=max(wires) if wires else None,
        other_cores=sum(others) / len(others) if others else None,
        steal_share=max(steals) if steals else None,
        server_cpu_s=_sum_or_none([r.server_cpu_s for r in runs]),
        client_cpu_s=_sum_or_none([r.client_cpu_s for r in runs]),
        total_rounds=sum(r.total_rounds for r in runs),
        wall_s=sum(r.wall_s for r in runs),
        note=f"{len(runs)} runs pooled" if len(runs) > 1 else "",
    )


def _sum_or_none(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def flower_python() -> Path:
    """The interpreter of ``.venv-flower`` (built by ``scripts/flower_venv.sh``)."""
    return Path(os.environ.get("FLOWER_VENV", REPO / ".venv-flower")) / "bin" / "python"


def _aggregator_command() -> list[str]:
    script = Path(sys.executable).with_name("sedna-aggregator")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "sedna_aggregator"]


def _worker_args(spec: RunSpec, port: int, out: Path) -> list[str]:
    return [
        "--port",
        str(port),
        "--clients",
        str(spec.clients),
        "--params",
        str(spec.params),
        "--layers",
        str(spec.layers),
        "--rounds",
        str(spec.total_rounds),
        "--timeout",
        str(spec.timeout),
        "--out",
        str(out),
    ]


def _server_command(system: str, spec: RunSpec, port: int, out: Path) -> list[str]:
    if system in _AGGREGATOR_SYSTEMS:
        return [
            *_aggregator_command(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--metrics-port",
            "none",
            "--log-level",
            "WARNING",
            "--exit-round",
            str(spec.total_rounds),
            "--min-participants",
            str(spec.clients),
            "--expected-clients",
            str(spec.clients),
            "--round-timeout-seconds",
            str(spec.timeout),
            "--max-update-bytes",
            str(max(2 << 30, 2 * spec.model_bytes)),
            # The bulk port on a free port (the default 7365 may be taken on a shared machine).
            "--bulk-port",
            "0",
        ]
    python = str(flower_python()) if system == FLOWER else sys.executable
    return [python, "-m", _MODULES[system], "server", *_worker_args(spec, port, out)]


def _client_command(system: str, spec: RunSpec, port: int, k: int, out: Path) -> list[str]:
    python = str(flower_python()) if system == FLOWER else sys.executable
    return [
        python,
        "-m",
        _MODULES[system],
        "client",
        "--client",
        str(k),
        *_worker_args(spec, port, out),
    ]


def _listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1.0):
        return True


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime + own.ru_utime + own.ru_stime


def _tail(path: Path, lines: int = 8) -> str:
    with contextlib.suppress(OSError):
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    return ""


def run_system(  # noqa: PLR0915 - one linear start / wait / collect flow
    system: str, spec: RunSpec, progress: Callable[[str], None] = lambda _m: None
) -> SystemResult:
    """Start the server and K clients of ``system``, wait for all rounds, collect the figures.

    Failures (a process exiting non-zero, a deadline) are recorded in ``SystemResult.error``
    with the log to read, so one system's failure does not lose the others' results.
    """
    result = SystemResult(system, spec.params, spec.clients, spec.model_bytes)
    run_dir = spec.work_dir / system
    run_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server_out = run_dir / "server.json"
    server = ServerProcess(
        f"{system} server",
        _server_command(system, spec, port, server_out),
        run_dir / "server.log",
        env={"PYTHONPATH": str(REPO)},
    )
    clients: list[subprocess.Popen[bytes]] = []
    logs = []
    started = time.monotonic()
    busy0, steal0, cpu0 = machine_busy_seconds(), machine_steal_seconds(), _children_cpu()
    try:
        server.start()
        server.wait_ready(lambda: _listening(port), within=120.0)
        result.idle_rss_kb = proc_memory_kb(server.pid)["VmRSS"]
        server_cpu_ready = proc_cpu_seconds(server.pid)
        progress(f"{system}: server ready (pid {server.pid}); starting {spec.clients} clients")
        for k in range(spec.clients):
            log = (run_dir / f"client-{k}.log").open("wb")
            logs.append(log)
            clients.append(
                subprocess.Popen(
                    _client_command(system, spec, port, k, run_dir / f"client-{k}.json"),
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONPATH": str(REPO)},
                )
            )
        deadline = started + spec.timeout
        for k, proc in enumerate(clients):
            try:
                code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise RuntimeError(
                    f"clients not done after {spec.timeout:.0f} s (--timeout); "
                    f"see {run_dir}/client-{k}.log"
                ) from None
            if code != 0:
                raise RuntimeError(
                    f"client {k} exited with {code}: {_tail(run_dir / f'client-{k}.log')}"
                )
        if system in _AGGREGATOR_SYSTEMS:
            result.peak_rss_kb = proc_memory_kb(server.pid)["VmHWM"]
            server_cpu_end = proc_cpu_seconds(server.pid)
        else:
            server_report = _wait_for_file(server_out, deadline, server, run_dir)
            result.peak_rss_kb = int(server_report["memory_kb"]["VmHWM"])
            server_cpu_end = float(server_report["cpu_s"])
        result.server_cpu_s = server_cpu_end - server_cpu_ready
    except Exception as exc:  # recorded in the result: the bench goes on
        result.error = str(exc)
    finally:
        for proc in clients:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
        server.stop()
    result.wall_s = time.monotonic() - started
    children = _children_cpu() - cpu0
    other = machine_busy_seconds() - busy0 - children
    if result.error is None:
        result.total_rounds = spec.total_rounds
    result.other_cores = max(0.0, other / result.wall_s) if result.wall_s > 0 else None
    if result.wall_s > 0:
        stolen = machine_steal_seconds() - steal0
        result.steal_share = max(0.0, stolen / (result.wall_s * (os.cpu_count() or 1)))
    if result.error is None:
        try:
            _collect(system, spec, result, run_dir)
        except (OSError, ValueError, KeyError) as exc:
            result.error = f"unreadable results in {run_dir}: {exc}"
    return result


def _wait_for_file(
    path: Path, deadline: float, server: ServerProcess, run_dir: Path
) -> dict[str, Any]:
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no server report after the clients finished; see {run_dir}")
        time.sleep(0.05)
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def _collect(system: str, spec: RunSpec, result: SystemResult, run_dir: Path) -> None:
    """Round times (warm-up dropped), the correctness check, JSON wire bytes."""
    reports = [json.loads((run_dir / f"client-{k}.json").read_text()) for k in range(spec.clients)]
    spans: dict[int, tuple[float, float]] = {}
    if system == FLOWER:
        server = json.loads((run_dir / "server.json").read_text())
        for r, t0, t1 in server["rounds"]:
            spans[int(r)] = (float(t0), float(t1))
        result.max_abs_error = float(server["max_abs_error"])
        fits = {int(rep["fits"]) for rep in reports}
        if fits != {spec.total_rounds}:
            raise ValueError(
                f"Flower clients trained {sorted(fits)} rounds, not {spec.total_rounds}"
            )
    else:
        for rep in reports:
            for r, t0, t1 in rep["rounds"]:
                lo, hi = spans.get(int(r), (float(t0), float(t1)))
                spans[int(r)] = (min(lo, float(t0)), max(hi, float(t1)))
            if len(rep["rounds"]) != spec.total_rounds:
                raise ValueError(
                    f"client {rep['client']} ran {len(rep['rounds'])} rounds, "
                    f"not {spec.total_rounds}"
                )
        errors = [rep["max_abs_error"] for rep in reports if rep.get("max_abs_error") is not None]
        result.max_abs_error = max(float(e) for e in errors) if errors else None
        if system == FLOOR and not all(rep["bytes_ok"] for rep in reports):
            raise ValueError("a floor client received other bytes than the server sent")
    result.client_cpu_s = sum(float(rep["cpu_s"]) for rep in reports)
    measured = sorted(spans)[spec.warmup :]
    if len(measured) != spec.rounds:
        raise ValueError(f"{len(measured)} measured rounds, expected {spec.rounds}")
    result.round_times = [spans[r][1] - spans[r][0] for r in measured]
    result.window_s = spans[measured[-1]][1] - spans[measured[0]][0]
    if system == WEBSOCKET:
        total = sum(
            int(rep["wire_bytes_sent"]) + int(rep["wire_bytes_received"]) for rep in reports
        )
        result.wire_bytes_per_round = total // spec.total_rounds
