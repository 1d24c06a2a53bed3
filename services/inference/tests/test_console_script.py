"""``sedna-inference --model-name m --model-path m.onnx`` starts, becomes SERVING and infers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sedna.api.oip.v2 import grpc_service_pb2 as pb
from sedna.api.oip.v2 import grpc_service_pb2_grpc as pb_grpc
from sedna.service.oip_client import InferenceClient

DEADLINE_SECONDS = 30.0


def _start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    """Start ``sedna-inference`` and return it with its gRPC port (from its startup log)."""
    script = shutil.which("sedna-inference", path=str(Path(sys.executable).parent))
    assert script, "sedna-inference is not installed next to the interpreter"
    process = subprocess.Popen(
        [script, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line, "sedna-inference exited before it started"
            record = json.loads(line)
            if record.get("message") == "gRPC server started":
                return process, int(record["port"])
        raise AssertionError("sedna-inference did not start in time")
    except BaseException:
        process.kill()
        process.wait(timeout=10)
        raise


@pytest.mark.slow
def test_console_script_serves_the_upstream_cloud_worker_env(
    model_path: Path,
    linear_expected: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
) -> None:
    """No --model-*: MODEL_URL is served as SERVICE_NAME on BIG_MODEL_BIND_IP/PORT."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEDNA_", "BIG_MODEL_"))}
    env.pop("JOB_NAME", None)
    env.update(
        MODEL_URL=str(model_path),
        SERVICE_NAME="helmet",
        BIG_MODEL_BIND_IP="127.0.0.1",
        BIG_MODEL_BIND_PORT="0",
    )
    process, port = _start(["--metrics-port", "0", "--drain-seconds", "2"], env)
    try:
        x = np.ones(4, dtype=np.float32)
        with InferenceClient("127.0.0.1", port, "helmet", timeout=10) as client:
            deadline = time.monotonic() + DEADLINE_SECONDS
            while not client.ready() and time.monotonic() < deadline:
                time.sleep(0.05)
            y = client.infer(x)
        np.testing.assert_allclose(y, linear_expected(x[None])[0], rtol=1e-5, atol=1e-6)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.slow
def test_console_script_serves_the_model(
    model_path: Path,
    linear_expected: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEDNA_")}
    args = ["--port", "0", "--metrics-port", "0", "--drain-seconds", "2"]
    args += ["--model-name", "m", "--model-path", str(model_path), "--max-batch-size", "4"]
    process, port = _start(args, env)
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = None
            while time.monotonic() < deadline:
                status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                time.sleep(0.05)
            assert status == health_pb2.HealthCheckResponse.SERVING
            x = np.ones((3, 4), dtype=np.float32)
            request = pb.ModelInferRequest(model_name="m")
            request.inputs.add(name="x", datatype="FP32", shape=[3, 4])
            request.raw_input_contents.append(x.tobytes())
            response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
        y = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(3, 3)
        np.testing.assert_allclose(y, linear_expected(x), rtol=1e-5, atol=1e-6)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
