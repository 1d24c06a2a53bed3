"""End-to-end harness: the real ``sedna-gm`` / ``sedna-lc`` / ``sedna`` commands as processes.

Nothing here is imported in-process: every component is started through its console script,
talks gRPC/HTTP on loopback and keeps its state on disk, so the tests see what a user sees.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

from sedna.cli.stack import wait_healthy

T = TypeVar("T")

START_DEADLINE = 60.0


def script(name: str) -> str:
    """The console script installed next to the running interpreter."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is not installed in this environment"
    return found


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def eventually(
    check: Callable[[], T | None], within: float = 30.0, what: str = "", every: float = 0.1
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what or check}")
        time.sleep(every)


def clean_env() -> dict[str, str]:
    """The environment without any Sedna or upstream LC settings of the developer's shell."""
    upstream = {"NODENAME", "GM_ADDRESS", "BIND_PORT"}
    return {k: v for k, v in os.environ.items() if not k.startswith("SEDNA_") and k not in upstream}


@dataclass
class Component:
    """One service process with fixed ports, so a restart comes back on the same address."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, f"{self.name} is running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=clean_env()
            )
        wait_healthy(self.address, time.monotonic() + START_DEADLINE, self.alive)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """``kill -9``: no drain, no shutdown callbacks."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM and wait for the drain; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@dataclass
class Cluster:
    """A GlobalManager and LocalControllers started as separate processes."""

    root: Path
    gm: Component
    heartbeat: float
    lcs: dict[str, Component] = field(default_factory=dict)
    http_ports: dict[str, int] = field(default_factory=dict)

    def add_lc(self, node: str) -> Component:
        http_port, grpc_port = free_port(), free_port()
        lc = Component(
            name=f"lc-{node}",
            argv=[
                script("sedna-lc"),
                "--host=127.0.0.1",
                f"--port={grpc_port}",
                "--metrics-port=0",
                "--log-format=json",
                f"--node-name={node}",
                f"--gm-address={self.gm.address}",
                f"--http-port={http_port}",
                f"--data-dir={self.root / 'nodes' / node}",
                "--dataset-poll-seconds=0.5",
            ],
            port=grpc_port,
            log_path=self.root / f"lc-{node}.log",
        )
        self.lcs[node] = lc
        self.http_ports[node] = http_port
        lc.start()
        return lc

    def sedna(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the ``sedna`` CLI against this cluster's GM."""
        result = subprocess.run(
            [script("sedna"), *args, "--server", self.gm.address],
            capture_output=True,
            text=True,
            timeout=60,
            env={**clean_env(), "COLUMNS": "200"},
            check=False,
        )
        if check:
            assert result.returncode == 0, (
                f"sedna {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def get_json(self, kind: str, name: str) -> dict[str, Any]:
        out = self.sedna("get", kind, name, "-o", "json").stdout
        data = json.loads(out)
        assert isinstance(data, dict)
        return data

    def post_report(self, node: str, worker: str, body: dict[str, Any]) -> int:
        """POST an upstream-format worker report to a node's LC; the HTTP status, 0 if down."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_ports[node]}/sedna/workers/{worker}/info",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0

    def stop_all(self) -> None:
        for component in [*self.lcs.values(), self.gm]:
            if component.alive():
                component.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A GM on SQLite (fast heartbeats) with no nodes yet; ``cluster.add_lc(name)`` adds one."""
    heartbeat = 0.5
    port = free_port()
    gm = Component(
        name="gm",
        argv=[
            script("sedna-gm"),
            "--host=127.0.0.1",
            f"--port={port}",
            "--metrics-port=0",
            "--log-format=json",
            f"--store-url=sqlite:///{tmp_path / 'gm.db'}",
            f"--heartbeat-seconds={heartbeat}",
        ],
        port=port,
        log_path=tmp_path / "gm.log",
    )
    gm.start()
    result = Cluster(tmp_path, gm, heartbeat)
    try:
        yield result
    finally:
        result.stop_all()


@pytest.fixture
def e2e_tools() -> SimpleNamespace:
    """This module's helpers, for test modules (which cannot import a conftest)."""
    return SimpleNamespace(
        script=script, clean_env=clean_env, eventually=eventually, free_port=free_port
    )
