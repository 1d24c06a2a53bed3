"""``sedna-aggregator --checkpoint-dir D`` starts, reports SERVING and runs a round."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sedna.api.aggregator.v1 import aggregation_service_pb2 as pb
from sedna.api.aggregator.v1 import aggregation_service_pb2_grpc as pb_grpc
from sedna.tensor import assemble_sync, iter_frames

DEADLINE_SECONDS = 30.0
SERVICE = "sedna.api.aggregator.v1.AggregationService"


def _start(args: list[str]) -> tuple[subprocess.Popen[str], int]:
    script = shutil.which("sedna-aggregator", path=str(Path(sys.executable).parent))
    assert script, "sedna-aggregator is not installed next to the interpreter"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEDNA_")}
    process = subprocess.Popen(
        [script, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line, "sedna-aggregator exited before it started"
            record = json.loads(line)
            if record.get("message") == "gRPC server started":
                return process, int(record["port"])
        raise AssertionError("sedna-aggregator did not start in time")
    except BaseException:
        process.kill()
        process.wait(timeout=10)
        raise


def test_console_script_serves_a_round(tmp_path: Path) -> None:
    args = ["--port", "0", "--metrics-port", "0", "--drain-seconds", "1"]
    args += ["--checkpoint-dir", str(tmp_path), "--aggregation-parameters", "{}"]
    process, port = _start(args)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", SERVICE):
                status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert status.status == health_pb2.HealthCheckResponse.SERVING
            stub = pb_grpc.AggregationServiceStub(channel)
            joined = stub.JoinSession(
                pb.JoinSessionRequest(session_id="ns/job", client_id="a", sample_count=5),
                timeout=5,
            )
            assert joined.selected
            weights = np.arange(6, dtype=np.float32)
            header = pb.PushUpdateRequest(
                header=pb.UpdateHeader(session_id="ns/job", client_id="a", round=1, sample_count=5)
            )
            body = [pb.PushUpdateRequest(frame=f) for f in iter_frames({"w": weights})]
            stub.PushUpdate(iter([header, *body]), timeout=5)
            replies = list(
                stub.PullGlobalWeights(
                    pb.PullGlobalWeightsRequest(session_id="ns/job", round=1), timeout=5
                )
            )
            assert replies[0].header.exit
            ((_name, got),) = assemble_sync(r.frame for r in replies[1:])
            np.testing.assert_array_equal(got, weights)
        assert (tmp_path / "session-ns%2Fjob" / "checkpoint.json").exists()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _drain_stderr(process: subprocess.Popen[str]) -> list[str]:
    """The rest of the log, read until the process ends (within the deadline)."""
    assert process.stderr is not None
    lines = list(process.stderr)
    process.wait(timeout=DEADLINE_SECONDS)
    return lines


def _one_round(port: int, leave: bool) -> None:
    from sedna.service.aggregation_client import AggregationClient

    with AggregationClient("127.0.0.1", port, timeout=DEADLINE_SECONDS) as client:
        client.join("default/fl-exit", "trainer-1", sample_count=10)
        client.push(1, [np.ones(4, np.float32)], sample_count=10)
        got = client.pull(1, timeout=DEADLINE_SECONDS)
        assert got.exit
        if leave:
            client.leave()


@pytest.mark.parametrize(
    ("grace", "leave", "logged"),
    [
        # Exits well before the 60 s grace: the trainer left.
        ("60", True, "every session completed; exiting"),
        # A trainer that stays joined is waited for the grace only.
        ("0.5", False, "1 trainer(s) still joined"),
    ],
    ids=["trainer-left", "grace-passed"],
)
def test_exit_when_done_exits_0_once_the_session_completed(
    grace: str, leave: bool, logged: str
) -> None:
    args = ["--port", "0", "--metrics-port", "none", "--drain-seconds", "1"]
    args += ["--exit-when-done", "--exit-round", "1", "--exit-grace-seconds", grace]
    process, port = _start(args)
    try:
        _one_round(port, leave=leave)
        log = _drain_stderr(process)
        assert process.returncode == 0, log
        assert any(logged in line for line in log), log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
