"""The TorchScript backend, directly and through the OIP gRPC server."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest

try:
    import torch
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "test_torch_backend needs PyTorch; install the dev extras: pip install -e '.[dev]'"
    ) from exc

from sedna.api.oip.v2 import grpc_service_pb2 as pb
from sedna.serving.errors import BackendError
from sedna_inference.backends import load_backend

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.(script|save)` is deprecated:DeprecationWarning"
)

Served = Any  # conftest.Served (test modules cannot import conftest in importlib mode)

SPEC = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
}


def _linear() -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Linear(4, 3)


def save_scripted(module: torch.nn.Module, path: Path, spec: dict[str, Any] | None = SPEC) -> Path:
    torch.jit.save(torch.jit.script(module), str(path))
    if spec is not None:
        path.with_name(path.name + ".json").write_text(json.dumps(spec), encoding="utf-8")
    return path


def reference(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    with torch.no_grad():
        result: npt.NDArray[np.float32] = _linear()(torch.from_numpy(x)).numpy()
    return result


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    """Overrides conftest's ONNX model: ``served`` then serves this TorchScript model."""
    return save_scripted(_linear(), tmp_path / "linear.pt")


def raw_request(x: npt.NDArray[np.float32]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="linear")
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    return request


def output_array(response: pb.ModelInferResponse) -> npt.NDArray[np.float32]:
    out = response.outputs[0]
    assert (out.name, out.datatype) == ("y", "FP32")
    return np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(list(out.shape))


async def test_metadata_comes_from_the_sidecar(served: Served) -> None:
    meta = await served.stub.ModelMetadata(pb.ModelMetadataRequest(name="linear"))
    assert meta.platform == "pytorch_libtorch"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("x", "FP32", [-1, 4])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("y", "FP32", [-1, 3])]


async def test_infer_matches_torch(served: Served) -> None:
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    response = await served.stub.ModelInfer(raw_request(x))
    np.testing.assert_allclose(output_array(response), reference(x), rtol=1e-5, atol=1e-6)


@pytest.fixture
def max_queue_delay_ms() -> int:
    """Long enough that concurrent requests meet in the queue even on a loaded machine (at
    5 ms, a fast CI machine served all 24 one by one)."""
    return 250


async def test_concurrent_requests_are_batched_on_the_dynamic_dim(
    served: Served, hold_first_call: Any
) -> None:
    hold_first_call(served)
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((1 + i % 3, 4)).astype(np.float32) for i in range(24)]
    responses = await asyncio.gather(*(served.stub.ModelInfer(raw_request(x)) for x in xs))
    for x, response in zip(xs, responses, strict=True):
        np.testing.assert_allclose(output_array(response), reference(x), rtol=1e-5, atol=1e-6)
    registry = served.server.registry
    batches = registry.get_sample_value("sedna_inference_batch_size_count", {"model": "linear"})
    rows = registry.get_sample_value("sedna_inference_batch_size_sum", {"model": "linear"})
    assert rows == len(xs)
    assert batches is not None
    assert 1 <= batches < len(xs)  # at least one backend call served several requests


async def test_wrong_shape_is_invalid_argument_naming_the_input(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.ModelInfer(raw_request(np.zeros((2, 5), np.float32)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    for needle in ("'x'", "[2, 5]", "[-1, 4]"):
        assert needle in details, (needle, details)


def test_missing_sidecar_names_the_file(tmp_path: Path) -> None:
    path = save_scripted(_linear(), tmp_path / "nospec.pth", spec=None)
    with pytest.raises(BackendError, match=r"nospec\.pth\.json"):
        load_backend(path)


def test_bad_sidecar_is_a_clear_error(tmp_path: Path) -> None:
    spec = {"inputs": [{"name": "x", "datatype": "FP33", "shape": [-1, 4]}], "outputs": []}
    path = save_scripted(_linear(), tmp_path / "bad.pt", spec=spec)
    with pytest.raises(BackendError, match=r"bad\.pt\.json.*FP33"):
        load_backend(path)


class _TwoHeads(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a + b, (a * b).sum(dim=1).to(torch.int64)


def test_positional_inputs_and_tuple_outputs(tmp_path: Path) -> None:
    spec = {
        "inputs": [
            {"name": "a", "datatype": "INT64", "shape": [-1, 2]},
            {"name": "b", "datatype": "INT64", "shape": [-1, 2]},
        ],
        "outputs": [
            {"name": "sum", "datatype": "INT64", "shape": [-1, 2]},
            {"name": "dot", "datatype": "INT64", "shape": [-1]},
        ],
    }
    backend = load_backend(save_scripted(_TwoHeads(), tmp_path / "heads.pt", spec=spec))
    a = np.array([[1, 2], [3, 4]], dtype=np.int64)
    b = np.array([[10, 20], [30, 40]], dtype=np.int64)
    b.flags.writeable = False  # as decoded from a request buffer
    out = backend.infer({"b": b, "a": a})
    np.testing.assert_array_equal(out["sum"], a + b)
    np.testing.assert_array_equal(out["dot"], (a * b).sum(axis=1))


def test_wrong_output_count_is_a_backend_error(tmp_path: Path) -> None:
    spec = {**SPEC, "outputs": [*SPEC["outputs"], {"name": "z", "datatype": "FP32", "shape": [-1]}]}
    backend = load_backend(save_scripted(_linear(), tmp_path / "short.pt", spec=spec))
    with pytest.raises(BackendError, match="expected 2 tensor"):
        backend.infer({"x": np.zeros((1, 4), np.float32)})


def test_missing_torch_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_scripted(_linear(), tmp_path / "linear.pt")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(BackendError, match=r"need PyTorch.*sedna\[torch\]"):
        load_backend(path)
