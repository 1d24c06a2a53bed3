"""ONNXBackend: an .onnx MODEL_URL served without any estimator, or a user estimator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from sedna.backend import set_backend
from sedna.backend.onnx import ONNXBackend

MakeModel = Callable[..., tuple[Path, np.ndarray[Any, Any]]]
Reference = Callable[..., np.ndarray[Any, Any]]


def test_no_estimator_runs_the_model_url(
    monkeypatch: pytest.MonkeyPatch, onnx_linear: MakeModel, reference: Reference
) -> None:
    path, wb = onnx_linear()
    monkeypatch.setenv("BACKEND_TYPE", "onnx")
    monkeypatch.setenv("MODEL_URL", str(path))
    backend = set_backend(None)
    assert isinstance(backend, ONNXBackend)
    assert backend.direct
    x = np.random.default_rng(0).random((3, 4))  # float64 is cast to the input's float32
    result = backend.predict(x)  # loads MODEL_URL on first use
    assert result.dtype == np.float32
    assert np.allclose(result, reference(x, wb), atol=1e-5)
    # One sample without the batch dimension: added, and removed from the output.
    single = backend.predict(x[0].tolist())
    assert single.shape == (3,)
    assert np.allclose(single, reference(x[:1], wb)[0], atol=1e-5)


def test_explicit_load_and_save_copy_the_model(
    onnx_linear: MakeModel, reference: Reference, tmp_path: Path
) -> None:
    path, wb = onnx_linear()
    backend = ONNXBackend(model_save_path=str(tmp_path / "out"))
    assert backend.model_name == "model_finetune_onnx.onnx"
    backend.load(f"file://{path}")
    saved = backend.save()
    assert saved == str(tmp_path / "out" / "model_finetune_onnx.onnx")
    again = ONNXBackend()
    again.load(saved)
    x = np.ones((1, 4), dtype=np.float32)
    assert np.allclose(again.predict(x), reference(x, wb), atol=1e-5)


def test_missing_model_is_an_error(tmp_path: Path) -> None:
    backend = ONNXBackend(model_save_path=str(tmp_path / "missing.onnx"))
    with pytest.raises(FileNotFoundError, match=r"missing\.onnx"):
        backend.predict([[1.0, 2.0, 3.0, 4.0]])
    with pytest.raises(FileNotFoundError, match="is a directory"):
        ONNXBackend().load(str(tmp_path))


def test_multi_input_model_takes_a_mapping(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Mul", ["a", "b"], ["prod"]),
        ],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.INT64, [2]),
            helper.make_tensor_value_info("b", TensorProto.INT64, [2]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.INT64, [2]),
            helper.make_tensor_value_info("prod", TensorProto.INT64, [2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "two.onnx"
    onnx.save(model, str(path))
    backend = ONNXBackend()
    backend.load(str(path))
    out = backend.predict({"a": [1, 2], "b": [3, 4]})
    assert out["sum"].tolist() == [4, 6]
    assert out["prod"].tolist() == [3, 8]
    with pytest.raises(ValueError, match="missing model input"):
        backend.predict({"a": [1, 2]})
    with pytest.raises(ValueError, match="pass a mapping"):
        backend.predict([1, 2])


def test_an_estimator_with_its_own_predict_is_used(
    monkeypatch: pytest.MonkeyPatch, onnx_linear: MakeModel
) -> None:
    path, _ = onnx_linear()

    class Estimator:
        def __init__(self) -> None:
            self.loaded = ""

        def load(self, model_url: str = "") -> None:
            self.loaded = model_url

        def predict(self, data: Any, **kwargs: Any) -> str:
            return f"own:{data}"

    monkeypatch.setenv("BACKEND_TYPE", "ONNX")
    backend = set_backend(Estimator)
    assert isinstance(backend, ONNXBackend)
    assert not backend.direct
    backend.load(str(path))
    assert backend.estimator.loaded == str(path)
    assert backend.predict(1) == "own:1"
    assert backend.session is None
