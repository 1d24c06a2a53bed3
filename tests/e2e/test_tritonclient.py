"""A standard client, NVIDIA's ``tritonclient[grpc]``, queries the real ``sedna-inference``.

``tritonclient[grpc]`` pins protobuf < 7 and cannot share ``.venv`` with Sedna, so it lives
in ``.venv-triton`` (``make install`` builds it with ``scripts/triton_venv.sh``). The test
starts the ``sedna-inference`` console script on loopback with an ONNX model, runs a client
script under ``.venv-triton``'s interpreter, and checks what tritonclient saw against
onnxruntime run here on the same model. Without ``.venv-triton`` the test is skipped, unless
``SEDNA_REQUIRE_TRITON=1`` (as in CI), where it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from sedna.cli.stack import wait_healthy

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
START_DEADLINE_S = 60.0
CLIENT_TIMEOUT_S = 120.0
RNG = np.random.default_rng(11)
WEIGHT = RNG.standard_normal((4, 3)).astype(np.float32)
BIAS = RNG.standard_normal(3).astype(np.float32)

# Runs under .venv-triton: only tritonclient and numpy there. Arguments: server address,
# model name, input .npy, output folder. Prints one JSON report; writes each output as .npy.
CLIENT = r"""
import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

url, model, x_path, out_dir = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
client = grpcclient.InferenceServerClient(url=url)
report = {
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "model_ready": client.is_model_ready(model),
    "metadata": client.get_model_metadata(model, as_json=True),
}
x = np.load(x_path, allow_pickle=False)
meta = report["metadata"]
first = meta["inputs"][0]
request = grpcclient.InferInput(first["name"], list(x.shape), first["datatype"])
request.set_data_from_numpy(x)
wanted = [grpcclient.InferRequestedOutput(o["name"]) for o in meta["outputs"]]
result = client.infer(model, [request], outputs=wanted, client_timeout=30)
report["outputs"] = {}
for output in meta["outputs"]:
    array = result.as_numpy(output["name"])
    np.save(out_dir / (output["name"] + ".npy"), array, allow_pickle=False)
    report["outputs"][output["name"]] = str(array.dtype)
bad = grpcclient.InferInput(first["name"], [2, 5], "FP32")
bad.set_data_from_numpy(np.zeros((2, 5), np.float32))
try:
    client.infer(model, [bad], client_timeout=30)
    report["bad"] = None
except InferenceServerException as exc:
    report["bad"] = {"status": exc.status(), "message": exc.message()}
client.close()
print(json.dumps(report))
"""


def write_model(path: Path) -> Path:
    """``y = x @ W + b`` (FP32 [N, 3]) and ``label = argmax(y, 1)`` (INT64 [N]); x FP32 [N, 4]."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
            helper.make_node("ArgMax", ["y"], ["label"], axis=1, keepdims=0),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
        ],
        initializer=[numpy_helper.from_array(WEIGHT, "W"), numpy_helper.from_array(BIAS, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def triton_python() -> Path:
    """``.venv-triton``'s interpreter; skip (or fail, with SEDNA_REQUIRE_TRITON=1) without it."""
    venv = REPO / os.environ.get("TRITON_VENV", ".venv-triton")
    python = venv / "bin" / "python"
    if python.is_file():
        return python
    reason = (
        f"{venv.name} is absent, so tritonclient[grpc] (which needs protobuf < 7) cannot run: "
        "build it with `make install` or `bash scripts/triton_venv.sh`"
    )
    if os.environ.get("SEDNA_REQUIRE_TRITON") == "1":
        pytest.fail(f"SEDNA_REQUIRE_TRITON=1 but {reason}")
    pytest.skip(reason)


def run_client(python: Path, address: str, x: npt.NDArray[Any], work: Path) -> dict[str, Any]:
    client = work / "client.py"
    client.write_text(CLIENT, encoding="utf-8")
    np.save(work / "x.npy", x, allow_pickle=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    done = subprocess.run(
        [str(python), str(client), address, "linear", str(work / "x.npy"), str(work)],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        env=env,
        check=False,
    )
    assert done.returncode == 0, f"the tritonclient script failed:\n{done.stdout}\n{done.stderr}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(report, dict)
    return report


@pytest.mark.slow
def test_tritonclient_grpc_queries_sedna_inference(
    tmp_path: Path, e2e_tools: SimpleNamespace
) -> None:
    python = triton_python()
    model = write_model(tmp_path / "linear.onnx")
    port = e2e_tools.free_port()
    log = tmp_path / "inference.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                e2e_tools.script("sedna-inference"),
                "--host=127.0.0.1",
                f"--port={port}",
                "--metrics-port=0",
                "--model-name=linear",
                f"--model-path={model}",
                "--max-batch-size=4",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=e2e_tools.clean_env(),
        )
    try:
        address = f"127.0.0.1:{port}"
        wait_healthy(address, time.monotonic() + START_DEADLINE_S, lambda: process.poll() is None)
        x = RNG.standard_normal((5, 4)).astype(np.float32)
        report = run_client(python, address, x, tmp_path)
    finally:
        process.terminate()
        process.wait(timeout=60)

    assert (report["live"], report["ready"], report["model_ready"]) == (True, True, True)
    meta = report["metadata"]
    assert meta["name"] == "linear"
    assert meta["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("x", "FP32", ["-1", "4"])
    ]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == [
        ("y", "FP32", ["-1", "3"]),
        ("label", "INT64", ["-1"]),
    ]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    want_y, want_label = session.run(["y", "label"], {"x": x})
    got_y = np.load(tmp_path / "y.npy", allow_pickle=False)
    got_label = np.load(tmp_path / "label.npy", allow_pickle=False)
    assert got_y.dtype == np.float32
    assert got_label.dtype == np.int64
    np.testing.assert_allclose(got_y, want_y, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got_label, want_label)
    assert report["bad"] is not None
    assert report["bad"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "'x'" in report["bad"]["message"]
