"""The server processes of the benchmark: start, wait until ready, CPU time, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "ServerProcess",
    "free_port",
    "machine_busy_seconds",
    "machine_steal_seconds",
    "proc_cpu_seconds",
    "sedna_inference_command",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _cpu_ticks() -> list[int]:
    """The machine's ``cpu`` line of ``/proc/stat``: user, nice, system, idle, iowait, irq,
    softirq, steal, ... in clock ticks, all CPUs together."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all CPUs, not idle or iowait), ``/proc/stat``."""
    values = _cpu_ticks()
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def machine_steal_seconds() -> float:
    """CPU seconds the hypervisor gave other guests while this machine's CPUs wanted to run
    (``steal`` in ``/proc/stat``, all CPUs); 0 where the kernel does not count it."""
    values = _cpu_ticks()
    return (values[7] if len(values) > 7 else 0) / os.sysconf("SC_CLK_TCK")


def sedna_inference_command() -> list[str]:
    """The ``sedna-inference`` console script next to this interpreter (else ``-m``)."""
    script = Path(sys.executable).with_name("sedna-inference")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "sedna_inference"]


class ServerProcess:
    """One server subprocess with its output in ``log_path``.

    Parameters
    ----------
    name
        Label used in errors.
    command
        The command line.
    log_path
        File that receives stdout and stderr.
    cpus
        CPUs the process (and every thread it starts) may run on; None: all.
    env
        Extra environment variables.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        log_path: Path,
        *,
        cpus: set[int] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.log_path = log_path
        self.cpus = cpus
        self.env = {**os.environ, **(env or {})}
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The process id."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._proc.pid

    def start(self) -> None:
        """Start the process (returns at once; see :meth:`wait_ready`)."""
        cpus = self.cpus

        def pin() -> None:  # runs in the child before exec: every thread inherits it
            if cpus:
                os.sched_setaffinity(0, cpus)

        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                preexec_fn=pin if cpus else None,  # noqa: PLW1509 - before any thread starts
            )

    def wait_ready(self, ready: Callable[[], bool], within: float) -> None:
        """Poll ``ready()`` until it is true; fail after ``within`` seconds or on exit.

        Raises
        ------
        RuntimeError
            The process exited, or was not ready in time (the message names its log).
        """
        deadline = time.monotonic() + within
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise RuntimeError(f"{self.name} exited with {code}; see {self.log_path}")
            with contextlib.suppress(Exception):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} not ready after {within:.0f} s; see {self.log_path}"
                )
            time.sleep(0.1)

    def cpu_seconds(self) -> float:
        """CPU seconds the process used so far."""
        return proc_cpu_seconds(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
