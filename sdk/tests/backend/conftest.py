"""Shared fixtures: a clean worker environment and tiny real models."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sedna.common.config import BaseConfig

WORKER_ENV = (
    "BACKEND_TYPE",
    "DEVICE_CATEGORY",
    "CUDA_VISIBLE_DEVICES",
    "MODEL_URL",
    "MODEL_NAME",
    "BASE_MODEL_URL",
    "S3_ENDPOINT_URL",
    "ACCESS_KEY_ID",
    "SECRET_ACCESS_KEY",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in WORKER_ENV:
        monkeypatch.setenv(name, "")  # recorded, so what set_backend writes is undone
        monkeypatch.delenv(name)
    BaseConfig.reset()
    yield
    BaseConfig.reset()


@pytest.fixture
def digits() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """scikit-learn's digits: 1797 images of 8x8 pixels as 64 floats in [0, 1], labels 0-9."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target


@pytest.fixture
def onnx_linear(tmp_path: Path) -> Callable[..., tuple[Path, np.ndarray[Any, Any]]]:
    """Write ``softmax(x @ w + b)`` as an .onnx file; returns (path, w)."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    def make(
        name: str = "linear.onnx", features: int = 4, classes: int = 3, seed: int = 0
    ) -> tuple[Path, np.ndarray[Any, Any]]:
        rng = np.random.default_rng(seed)
        w = rng.normal(size=(features, classes)).astype(np.float32)
        b = rng.normal(size=(classes,)).astype(np.float32)
        graph = helper.make_graph(
            [
                helper.make_node("MatMul", ["x", "w"], ["xw"]),
                helper.make_node("Add", ["xw", "b"], ["logits"]),
                helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
            ],
            "linear",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
            [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])],
            initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        path = tmp_path / name
        onnx.save(model, str(path))
        return path, np.concatenate([w, b[np.newaxis, :]])

    return make


def softmax_linear(x: np.ndarray[Any, Any], wb: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The reference result of :func:`onnx_linear`'s model."""
    logits = x @ wb[:-1] + wb[-1]
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]


@pytest.fixture
def reference() -> Callable[..., np.ndarray[Any, Any]]:
    return softmax_linear
