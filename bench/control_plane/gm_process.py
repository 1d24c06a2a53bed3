"""The GlobalManager under test: the real ``sedna-gm`` console script in a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import grpc

from sedna.api.gm.v1 import resource_service_pb2, resource_service_pb2_grpc
from sedna.runtime import ChannelConfig, open_channel

from .simlc import proc_cpu_seconds, proc_status_kb

__all__ = ["GMProcess", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _gm_command() -> list[str]:
    script = Path(sys.executable).with_name("sedna-gm")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "sedna_gm"]


class GMProcess:
    """``sedna-gm`` with a fresh SQLite store in ``work_dir``, logs in ``work_dir/gm.log``.

    Parameters
    ----------
    work_dir
        Folder of the store (``gm.db``) and the log.
    heartbeat_seconds
        The hub's heartbeat (``--heartbeat-seconds``); links and retransmits follow it.
    log_level
        The GM's ``--log-level``.
    extra_args
        More ``sedna-gm`` arguments (e.g. ``--hub-state-url``), appended last.
    """

    def __init__(
        self,
        work_dir: Path,
        heartbeat_seconds: float,
        log_level: str,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.work_dir = work_dir
        self.port = free_port()
        self.metrics_port = free_port()
        self.heartbeat_seconds = heartbeat_seconds
        self.log_level = log_level
        self.log_path = work_dir / "gm.log"
        self.extra_args = tuple(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        """The GM's gRPC address."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The GM's process id."""
        if self._proc is None:
            raise RuntimeError("the GM is not running")
        return self._proc.pid

    async def start(self, within: float = 60.0) -> None:
        """Start the GM and wait (up to ``within`` seconds) until its resource API answers."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        command = [
            *_gm_command(),
            "--port",
            str(self.port),
            "--metrics-port",
            str(self.metrics_port),
            "--store-url",
            f"sqlite:///{self.work_dir / 'gm.db'}",
            "--heartbeat-seconds",
            str(self.heartbeat_seconds),
            "--log-level",
            self.log_level,
            "--drain-seconds",
            "2",
            *self.extra_args,
        ]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
                command, stdout=log, stderr=subprocess.STDOUT, cwd=self.work_dir
            )
        deadline = time.monotonic() + within
        async with open_channel(ChannelConfig(target=self.target, default_timeout=2.0)) as channel:
            stub = resource_service_pb2_grpc.ResourceServiceStub(channel)
            while True:
                if self._proc.poll() is not None:
                    raise RuntimeError(
                        f"sedna-gm exited with {self._proc.returncode}; see {self.log_path}"
                    )
                try:
                    await stub.List(resource_service_pb2.ListRequest(kind="Dataset"))
                    return
                except grpc.aio.AioRpcError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)

    def rss_kb(self) -> int:
        """Resident set size (``VmRSS``) in KiB."""
        return proc_status_kb(self.pid)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far."""
        return proc_cpu_seconds(self.pid)

    def metrics(self) -> dict[str, float]:
        """The GM's Prometheus samples (name with labels -> value), from ``/metrics``."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            match = re.match(r"^(\S+)\s+(\S+)$", line)
            if match and not line.startswith("#"):
                with contextlib.suppress(ValueError):
                    samples[match.group(1)] = float(match.group(2))
        return samples

    def stop(self, timeout: float = 15.0) -> None:
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
