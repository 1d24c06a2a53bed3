"""set_backend: BACKEND_TYPE selection, upstream's unknown-type warning, device and paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

from sedna.backend import BACKEND_TYPES, BackendBase, set_backend
from sedna.common.config import BaseConfig


class Estimator:
    def predict(self, data: object) -> object:
        return data


@pytest.mark.parametrize(
    ("backend_type", "class_name"),
    [
        ("TORCH", "TorchBackend"),
        ("torch", "TorchBackend"),
        ("TENSORFLOW", "TFBackend"),
        ("KERAS", "KerasBackend"),
        ("ONNX", "ONNXBackend"),
    ],
)
def test_backend_type_selects_the_backend(
    monkeypatch: pytest.MonkeyPatch, backend_type: str, class_name: str
) -> None:
    monkeypatch.setenv("BACKEND_TYPE", backend_type)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known type does not warn
        backend = set_backend(Estimator())
    assert type(backend).__name__ == class_name
    assert isinstance(backend, BackendBase)


@pytest.mark.parametrize("backend_type", ["SKLEARN", "PYTORCH", "MINDSPORE"])
def test_unknown_type_warns_and_uses_itself(
    monkeypatch: pytest.MonkeyPatch, backend_type: str
) -> None:
    monkeypatch.setenv("BACKEND_TYPE", backend_type)
    with pytest.warns(UserWarning, match=f"{backend_type} Not Support yet, use itself"):
        backend = set_backend(Estimator())
    assert type(backend) is BackendBase


def test_default_is_tensorflow_as_upstream() -> None:
    backend = set_backend(Estimator())
    assert type(backend).__name__ == "TFBackend"


def test_env_wins_over_config_and_config_dict_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = set_backend(Estimator(), {"backend_type": "torch"})
    assert type(backend).__name__ == "TorchBackend"
    monkeypatch.setenv("BACKEND_TYPE", "ONNX")
    backend = set_backend(Estimator(), {"backend_type": "torch"})
    assert type(backend).__name__ == "ONNXBackend"


def test_no_estimator_gives_none_except_onnx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_TYPE", "TORCH")
    assert set_backend(None) is None
    monkeypatch.setenv("BACKEND_TYPE", "ONNX")
    backend = set_backend(None)
    assert type(backend).__name__ == "ONNXBackend"


def test_model_paths_come_from_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_TYPE", "SKLEARN")
    monkeypatch.setenv("MODEL_URL", "/models/little.onnx")
    monkeypatch.setenv("MODEL_NAME", "little.onnx")
    with pytest.warns(UserWarning, match="SKLEARN Not Support yet"):
        backend = set_backend(Estimator())
    assert backend is not None
    assert backend.model_save_path == "/models/little.onnx"
    assert backend.model_save_url == "/models/little.onnx"
    assert backend.model_name == "little.onnx"
    BaseConfig.from_json({"base_model_url": "/models/base"})
    with pytest.warns(UserWarning, match="SKLEARN Not Support yet"):
        backend = set_backend(Estimator())
    assert backend is not None
    assert backend.model_save_path == "/models/base"


def test_device_category(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_TYPE", "SKLEARN")
    with pytest.warns(UserWarning, match="SKLEARN Not Support yet"):
        backend = set_backend(Estimator())
    assert backend is not None
    assert not backend.use_cuda
    assert os.environ["DEVICE_CATEGORY"] == "CPU"
    monkeypatch.setenv("DEVICE_CATEGORY", "NPU")
    with pytest.warns(UserWarning, match="SKLEARN Not Support yet"):
        set_backend(Estimator())
    assert os.environ["DEVICE_CATEGORY"] == "NPU"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.warns(UserWarning, match="SKLEARN Not Support yet"):
        backend = set_backend(Estimator())
    assert backend is not None
    assert backend.use_cuda
    assert os.environ["DEVICE_CATEGORY"] == "GPU"


def test_missing_framework_of_an_explicit_type_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(BACKEND_TYPES, "TORCH", ("sedna_no_such_module_xyz", "TorchBackend"))
    monkeypatch.setenv("BACKEND_TYPE", "TORCH")
    with pytest.raises(ImportError, match=r"pip install 'sedna\[torch\]'"):
        set_backend(Estimator())


def test_missing_default_tensorflow_falls_back_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(BACKEND_TYPES, "TENSORFLOW", ("sedna_no_such_module_xyz", "TFBackend"))
    with pytest.warns(UserWarning, match="default TENSORFLOW backend is not installed"):
        backend = set_backend(Estimator())
    assert type(backend) is BackendBase


def test_importing_the_package_imports_no_framework() -> None:
    code = (
        "import json, sys\n"
        "import sedna.backend, sedna.backend.base\n"
        "print(json.dumps([m for m in ('torch', 'tensorflow', 'keras', 'onnxruntime')"
        " if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    )
    assert json.loads(out.stdout) == []


def test_backend_classes_are_importable_lazily() -> None:
    from sedna.backend import KerasBackend, ONNXBackend, TFBackend, TorchBackend

    assert issubclass(KerasBackend, TFBackend)
    assert all(issubclass(c, BackendBase) for c in (ONNXBackend, TFBackend, TorchBackend))
    import sedna.backend as backend_pkg

    with pytest.raises(AttributeError, match="NoSuchBackend"):
        _ = backend_pkg.NoSuchBackend
