"""Each service's console script starts, answers health over loopback and drains on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICES = ["gm", "lc", "aggregator", "kb", "inference"]
START_DEADLINE_SECONDS = 30.0


def _script(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"console script {name} is not installed next to {sys.executable}"
    return found


def _read_started_line(stream: IO[str], deadline: float) -> dict[str, object]:
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        record = json.loads(line)
        if record.get("message") == "gRPC server started":
            return record
    raise AssertionError("the service did not log 'gRPC server started' before its deadline")


def _service_args(service: str, state_dir: Path) -> list[str]:
    """What each service needs beyond ports: state in the test's directory, a node name."""
    if service == "gm":
        return ["--store-url", f"sqlite:///{state_dir / 'gm.db'}"]
    if service == "lc":
        # No GM listens on port 1: the LC must still start, serve and keep retrying the link.
        return [
            "--node-name",
            "edge-test",
            "--gm-address",
            "127.0.0.1:1",
            "--http-port",
            "0",
            "--data-dir",
            str(state_dir / "lc"),
        ]
    return []


@pytest.fixture
def started(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    name = f"sedna-{request.param}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEDNA_")}
    process = subprocess.Popen(
        [
            _script(name),
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--drain-seconds",
            "2",
            *_service_args(request.param, tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        record = _read_started_line(process.stderr, time.monotonic() + START_DEADLINE_SECONDS)
        port = record["port"]
        assert isinstance(port, int)
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.parametrize("started", SERVICES, indirect=True)
def test_service_serves_health_and_drains_on_sigterm(
    started: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = started
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0


@pytest.mark.parametrize("service", SERVICES)
def test_service_help_and_bad_flag(service: str) -> None:
    script = _script(f"sedna-{service}")
    shown = subprocess.run(
        [script, "--help"], check=False, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0
    assert f"SEDNA_{service.upper()}_PORT" in shown.stdout
    bad = subprocess.run(
        [script, "--check-config", "--port", "-1"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "port (--port): Input should be greater than or equal to 0" in bad.stderr


def test_lc_without_node_name_fails_with_a_clear_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NODENAME",)}
    env = {k: v for k, v in env.items() if not k.startswith("SEDNA_")}
    result = subprocess.run(
        [_script("sedna-lc"), "--port", "0", "--metrics-port", "0", "--data-dir", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 1
    assert "node_name (--node-name, SEDNA_LC_NODE_NAME or NODENAME) is required" in result.stderr
    assert "Traceback" not in result.stderr
