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

DEADLINE_SECONDS = 30.0


@pytest.mark.slow
def test_console_script_serves_the_model(
    model_path: Path,
    linear_expected: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
) -> None:
    script = shutil.which("sedna-inference", path=str(Path(sys.executable).parent))
    assert script, "sedna-inference is not installed next to the interpreter"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEDNA_")}
    process = subprocess.Popen(
        [
            script,
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--drain-seconds",
            "2",
            "--model-name",
            "m",
            "--model-path",
            str(model_path),
            "--max-batch-size",
            "4",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + DEADLINE_SECONDS
        port = None
        while port is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line, "sedna-inference exited before it started"
            record = json.loads(line)
            if record.get("message") == "gRPC server started":
                port = record["port"]
        assert isinstance(port, int)
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
