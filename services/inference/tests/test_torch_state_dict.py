"""PyTorch state dicts + a model class named in the sidecar, directly and through the server.

The TorchScript form and the parts both forms share (sidecar checks, positional inputs,
tuple outputs) are tested in ``test_torch_backend``.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from collections.abc import AsyncIterator
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
        "test_torch_state_dict needs PyTorch; install the dev extras: pip install -e '.[dev]'"
    ) from exc

from support.http_files import http_files

from sedna.api.oip.v2 import grpc_service_pb2 as pb
from sedna.serving.errors import BackendError
from sedna_inference.backends import Backend, load_backend

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.(script|save)` is deprecated:DeprecationWarning"
)

Served = Any  # conftest.Served (test modules cannot import conftest in importlib mode)

TENSORS = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
}
NET_PY = """\
import torch


class Net(torch.nn.Module):
    def __init__(self, in_features=4, out_features=3, scale=1.0):
        super().__init__()
        self.fc = torch.nn.Linear(in_features, out_features)
        self.scale = scale

    def forward(self, x):
        return self.fc(x) * self.scale


def not_a_module():
    return None
"""
FILE_SPEC = {"model_class": "Net", "model_file": "net.py", **TENSORS}


def _linear(out_features: int = 3) -> torch.nn.Linear:
    torch.manual_seed(5)
    return torch.nn.Linear(4, out_features)


def net_weights(out_features: int = 3) -> dict[str, torch.Tensor]:
    """The state dict of ``net.py``'s ``Net``: ``_linear()``'s, under ``fc.``."""
    return {f"fc.{key}": value for key, value in _linear(out_features).state_dict().items()}


def reference(x: npt.NDArray[np.float32], scale: float = 1.0) -> npt.NDArray[np.float32]:
    with torch.no_grad():
        result: npt.NDArray[np.float32] = (_linear()(torch.from_numpy(x)) * scale).numpy()
    return result


def write_model(
    directory: Path,
    weights: object,
    spec: dict[str, Any] | None = None,
    *,
    name: str = "net.pt",
    source: str | None = NET_PY,
) -> Path:
    """Save ``weights`` with ``torch.save`` into ``directory/name``, with its sidecar and,
    unless ``source`` is None, ``net.py``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    torch.save(weights, path)
    document = FILE_SPEC if spec is None else spec
    path.with_name(path.name + ".json").write_text(json.dumps(document), encoding="utf-8")
    if source is not None:
        (directory / "net.py").write_text(source, encoding="utf-8")
    return path


def infer(path: Path, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.asarray(load_backend(path).infer({"x": x})["y"], dtype=np.float32)


def infer_with(backend: Backend) -> npt.NDArray[np.float32]:
    return np.asarray(backend.infer({"x": X})["y"], dtype=np.float32)


X = np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)


# -- served through the repository and the OIP servicer ------------------------------------


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    """Overrides conftest's ONNX model: ``served`` serves this model directory."""
    spec = {**FILE_SPEC, "model_kwargs": {"scale": 2.0}}
    return write_model(tmp_path / "model", net_weights(), spec).parent


def raw_request(x: npt.NDArray[np.float32]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="linear")
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    return request


def output_array(response: pb.ModelInferResponse) -> npt.NDArray[np.float32]:
    out = response.outputs[0]
    assert (out.name, out.datatype) == ("y", "FP32")
    return np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(list(out.shape))


async def test_served_state_dict_directory(served: Served) -> None:
    meta = await served.stub.ModelMetadata(pb.ModelMetadataRequest(name="linear"))
    assert meta.platform == "pytorch"
    assert [(t.name, list(t.shape)) for t in meta.inputs] == [("x", [-1, 4])]
    response = await served.stub.ModelInfer(raw_request(X))
    np.testing.assert_allclose(output_array(response), reference(X, 2.0), rtol=1e-5, atol=1e-6)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.ModelInfer(raw_request(np.zeros((2, 5), np.float32)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


class TestRemoteArchive:
    """A zip holding the weights, the sidecar and ``net.py`` is self-contained."""

    @pytest.fixture
    async def model_path(self, tmp_path: Path) -> AsyncIterator[str]:
        folder = write_model(tmp_path / "src" / "model", net_weights()).parent
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for file in sorted(folder.iterdir()):
                archive.write(file, f"model/{file.name}")
        async with http_files({"net.zip": buffer.getvalue()}) as base:
            yield f"{base}/net.zip"

    async def test_served(self, served: Served) -> None:
        response = await served.stub.ModelInfer(raw_request(X))
        np.testing.assert_allclose(output_array(response), reference(X), rtol=1e-5, atol=1e-6)


# -- the forms a state dict comes in ------------------------------------------------------


def test_importable_class_with_kwargs(tmp_path: Path) -> None:
    spec = {
        "model_class": "torch.nn:Linear",
        "model_kwargs": {"in_features": 4, "out_features": 3},
        **TENSORS,
    }
    path = write_model(tmp_path, _linear().state_dict(), spec, name="linear.pth", source=None)
    assert load_backend(path).metadata().platform == "pytorch"
    np.testing.assert_allclose(infer(path, X), reference(X), rtol=1e-5, atol=1e-6)


def test_checkpoint_with_a_state_dict_key(tmp_path: Path) -> None:
    checkpoint = {"epoch": 7, "state_dict": net_weights(), "note": "best"}
    path = write_model(tmp_path, checkpoint)
    np.testing.assert_allclose(infer(path, X), reference(X), rtol=1e-5, atol=1e-6)


def test_legacy_torch_save_format(tmp_path: Path) -> None:
    path = write_model(tmp_path, {})  # placeholder, overwritten below in the legacy format
    torch.save(net_weights(), path, _use_new_zipfile_serialization=False)
    np.testing.assert_allclose(infer(path, X), reference(X), rtol=1e-5, atol=1e-6)


def test_module_part_may_name_the_model_file(tmp_path: Path) -> None:
    path = write_model(tmp_path, net_weights(), {**FILE_SPEC, "model_class": "net:Net"})
    np.testing.assert_allclose(infer(path, X), reference(X), rtol=1e-5, atol=1e-6)


def test_model_file_in_a_subfolder(tmp_path: Path) -> None:
    path = write_model(tmp_path, net_weights(), {**FILE_SPEC, "model_file": "code/net.py"})
    (tmp_path / "code").mkdir()
    (tmp_path / "net.py").rename(tmp_path / "code" / "net.py")
    np.testing.assert_allclose(infer(path, X), reference(X), rtol=1e-5, atol=1e-6)


def test_every_load_runs_the_current_model_file(tmp_path: Path) -> None:
    path = write_model(tmp_path, net_weights())
    first = load_backend(path)
    (tmp_path / "net.py").write_text(NET_PY.replace("* self.scale", "* 0.0"), encoding="utf-8")
    second = load_backend(path)
    np.testing.assert_allclose(infer_with(first), reference(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(infer_with(second), np.zeros((3, 3), np.float32))


def test_module_is_in_eval_mode_and_runs_without_grad(tmp_path: Path) -> None:
    source = NET_PY.replace(
        "return self.fc(x) * self.scale",
        "assert not self.training and torch.is_inference_mode_enabled()\n"
        "        return self.fc(x) * self.scale",
    )
    path = write_model(tmp_path, net_weights(), source=source)
    np.testing.assert_allclose(infer(path, X), reference(X), rtol=1e-5, atol=1e-6)


# -- errors ---------------------------------------------------------------------------------


def _fails(path: Path, pattern: str) -> str:
    with pytest.raises(BackendError, match=pattern) as caught:
        load_backend(path)
    return str(caught.value)


def test_state_dict_without_model_class(tmp_path: Path) -> None:
    path = write_model(tmp_path, net_weights(), TENSORS)
    message = _fails(path, r"'net\.pt' is not a TorchScript archive")
    assert "'net.pt.json'" in message
    assert '"model_class": "module.path:ClassName"' in message


def test_model_class_on_a_torchscript_archive(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(_linear()), str(path))
    spec = {"model_kwargs": {}, **TENSORS}
    path.with_name("scripted.pt.json").write_text(json.dumps(spec), encoding="utf-8")
    _fails(path, r"scripted\.pt\.json: 'model_kwargs' is for state dicts.*TorchScript archive")


@pytest.mark.parametrize(
    ("model_class", "model_file", "pattern"),
    [
        (42, None, r"'model_class' must be a string, 'module\.path:ClassName'"),
        ("Net", None, r"'model_class' must be 'module\.path:ClassName'.*got 'Net'"),
        (":Net", "net.py", r"'model_class' must be 'ClassName' \(a class in 'model_file'\)"),
        ("nosuch_module_4711:Net", None, r"cannot import module 'nosuch_module_4711'"),
        ("torch.nn:NoSuchNet", None, r"'model_class': module 'torch\.nn' has no class"),
        ("Missing", "net.py", r"'model_class': 'net\.py' has no class 'Missing'"),
        ("other:Net", "net.py", r"names module 'other', but 'model_file' is 'net\.py'"),
        ("not_a_module", "net.py", r"'not_a_module' is a function, not a torch\.nn\.Module"),
        ("collections:OrderedDict", None, r"is a class, not a torch\.nn\.Module subclass"),
    ],
)
def test_bad_model_class(
    tmp_path: Path, model_class: object, model_file: str | None, pattern: str
) -> None:
    spec: dict[str, Any] = {"model_class": model_class, **TENSORS}
    if model_file is not None:
        spec["model_file"] = model_file
    _fails(write_model(tmp_path, net_weights(), spec), r"net\.pt\.json: .*" + pattern)


@pytest.mark.parametrize(
    ("model_file", "pattern"),
    [
        (["net.py"], r"must be the name of a \.py file"),
        ("net.txt", r"must be the name of a \.py file"),
        ("../net.py", r"relative to the sidecar's directory, inside it"),
        ("/abs/net.py", r"relative to the sidecar's directory, inside it"),
        ("gone.py", r"no file .*gone\.py.*remote \.pt/\.pth model"),
    ],
)
def test_bad_model_file(tmp_path: Path, model_file: object, pattern: str) -> None:
    spec = {**FILE_SPEC, "model_file": model_file}
    _fails(write_model(tmp_path, net_weights(), spec), r"net\.pt\.json: 'model_file'.*" + pattern)


def test_model_file_that_fails_to_import(tmp_path: Path) -> None:
    path = write_model(tmp_path, net_weights(), source="import nosuch_dependency_4711\n")
    before = set(sys.modules)
    _fails(path, r"'model_file': importing 'net\.py' failed: ModuleNotFoundError")
    assert not [name for name in set(sys.modules) - before if name.startswith("_sedna_model_")]


@pytest.mark.parametrize("kwargs", [[4, 3], "scale=2", 3])
def test_model_kwargs_not_an_object(tmp_path: Path, kwargs: object) -> None:
    path = write_model(tmp_path, net_weights(), {**FILE_SPEC, "model_kwargs": kwargs})
    _fails(path, r"net\.pt\.json: 'model_kwargs' must be a JSON object")


def test_model_kwargs_the_class_refuses(tmp_path: Path) -> None:
    path = write_model(tmp_path, net_weights(), {**FILE_SPEC, "model_kwargs": {"depth": 3}})
    _fails(path, r"'model_class': Net\(\*\*model_kwargs\) failed: TypeError: .*'depth'")


def test_key_mismatch_lists_missing_and_unexpected_keys(tmp_path: Path) -> None:
    weights = {"linear.weight": torch.zeros(3, 4), "linear.bias": torch.zeros(3)}
    message = _fails(write_model(tmp_path, weights), r"does not match the state dict in 'net\.pt'")
    assert "net.pt.json: 'model_class' (Net)" in message
    assert "missing keys: fc.bias, fc.weight" in message
    assert "unexpected keys: linear.bias, linear.weight" in message


def test_key_mismatch_summary_is_bounded(tmp_path: Path) -> None:
    weights = {**net_weights(), **{f"extra.{i:02}": torch.zeros(1) for i in range(12)}}
    message = _fails(write_model(tmp_path, weights), r"unexpected keys: extra\.00, ")
    assert "extra.04 (+7 more)" in message
    assert "missing keys" not in message


def test_shape_mismatch_names_the_kwargs(tmp_path: Path) -> None:
    spec = {**FILE_SPEC, "model_kwargs": {"out_features": 2}}
    message = _fails(write_model(tmp_path, net_weights(), spec), r"size mismatch for fc\.weight")
    assert "'model_class' (Net, 'model_kwargs') does not match" in message


def test_pickled_module_is_refused(tmp_path: Path) -> None:
    path = write_model(tmp_path, torch.nn.Sequential(_linear()))
    message = _fails(path, r"cannot load 'net\.pt' as a state dict \(weights_only=True")
    assert "Unsupported global" in message
    assert "save model.state_dict(), not the model" in message


@pytest.mark.parametrize("weights", [torch.zeros(2), [torch.zeros(2)], {1: torch.zeros(2)}])
def test_not_a_state_dict(tmp_path: Path, weights: object) -> None:
    _fails(write_model(tmp_path, weights), r"'net\.pt' holds \w+, not a state dict")


def test_garbage_file(tmp_path: Path) -> None:
    path = write_model(tmp_path, {})
    path.write_bytes(b"not a torch file")
    _fails(path, r"torch cannot load 'net\.pt' as a state dict")
