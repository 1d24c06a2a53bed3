"""The joint-inference example's pieces the demo relies on: data, little model, manifests, edge
worker helpers (the whole pipeline runs in ``tests/e2e/test_demo_joint_inference.py``)."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml

from sedna.resources.validation import validate_object

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "joint_inference"
_MODULES = ("digits", "models", "manifests", "edge_worker")


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, ModuleType]]:
    """The example's modules, imported as its scripts import each other (by folder)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    for name in _MODULES:
        sys.modules.pop(name, None)
    try:
        yield {name: importlib.import_module(name) for name in _MODULES}
    finally:
        for name in _MODULES:
            sys.modules.pop(name, None)


def test_csv_round_trip(tmp_path: Path, example: dict[str, ModuleType]) -> None:
    digits = example["digits"]
    images = np.arange(2 * 64, dtype=np.float32).reshape(2, 8, 8) % 17
    labels = np.array([3, 7], dtype=np.int64)
    path = tmp_path / "data" / "test.csv"
    digits.write_csv(path, images, labels)
    header = path.read_text().splitlines()[0].split(",")
    assert header[:2] == ["label", "p0"]
    assert len(header) == 65
    got_x, got_y = digits.read_csv(path)
    np.testing.assert_array_equal(got_x, images)
    np.testing.assert_array_equal(got_y, labels)
    path.write_text("label,p0\n1,2\n")
    with pytest.raises(ValueError, match=r"test\.csv:2: expected 65 values, got 2"):
        digits.read_csv(path)


def test_split_is_seeded_and_stratified(example: dict[str, ModuleType]) -> None:
    digits = example["digits"]
    first, again = digits.load_split(0), digits.load_split(0)
    np.testing.assert_array_equal(first.test_y, again.test_y)
    assert len(first.test_y) == 450
    assert len(first.train_y) == 1347
    assert set(np.unique(first.test_y)) == set(range(10))
    assert first.test_x.shape == (450, 8, 8)


def test_pooling_matrix_averages_2x2_blocks(example: dict[str, ModuleType]) -> None:
    models = example["models"]
    image = np.zeros((8, 8), dtype=np.float32)
    image[0:2, 2:4] = 16.0  # block (0, 1) full
    image[7, 7] = 16.0  # a quarter of block (3, 3)
    pooled = image.reshape(1, 64) @ models.pooling_matrix()
    expected = np.zeros(16, dtype=np.float32)
    expected[1], expected[15] = 1.0, 0.25
    np.testing.assert_allclose(pooled[0], expected)


def test_little_model_onnx_matches_numpy(tmp_path: Path, example: dict[str, ModuleType]) -> None:
    digits, models = example["digits"], example["models"]
    split = digits.load_split(0)
    little = models.train_little(split.train_x, split.train_y, 0)
    path = tmp_path / "little.onnx"
    path.write_bytes(models.little_onnx(little))
    expected = little.predict_proba(split.test_x)
    got = models.onnx_predict(path, split.test_x)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got.shape == (450, 10)
    accuracy = float((got.argmax(axis=1) == split.test_y).mean())
    assert 0.8 < accuracy < 0.92  # clearly weaker than the big model (about 0.98)


def _render(example: dict[str, ModuleType], tmp_path: Path, **kw: Any) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = example["manifests"].render(
        tmp_path, python="/venv/bin/python", inference_server="/venv/bin/sedna-inference", **kw
    )
    return docs


def _containers(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = next(d for d in docs if d["kind"] == "JointInferenceService")["spec"]
    return (
        spec["edgeWorker"]["template"]["spec"]["containers"][0],
        spec["cloudWorker"]["template"]["spec"]["containers"][0],
    )


def test_template_is_valid_and_upstream_shaped() -> None:
    docs = [d for d in yaml.safe_load_all((EXAMPLE / "joint-inference.yaml").read_text()) if d]
    assert [d["kind"] for d in docs] == ["Model", "Model", "Dataset", "JointInferenceService"]
    for doc in docs:
        assert validate_object(doc).status == "valid", doc["metadata"]["name"]
    spec = docs[3]["spec"]
    assert spec["edgeWorker"]["hardExampleMining"] == {
        "name": "CrossEntropy",
        "parameters": [{"key": "threshold_cross_entropy", "value": "0.4"}],
    }
    assert spec["edgeWorker"]["model"]["name"] == docs[1]["metadata"]["name"]
    assert spec["cloudWorker"]["model"]["name"] == docs[0]["metadata"]["name"]


def test_render_for_a_data_dir(tmp_path: Path, example: dict[str, ModuleType]) -> None:
    docs = _render(example, tmp_path, threshold=0.3, cloud_port=24001)
    text = json.dumps(docs)
    assert "/tmp/sedna-joint-inference" not in text
    assert docs[0]["spec"]["url"] == f"{tmp_path}/models/big.onnx"
    assert docs[1]["spec"]["url"] == f"{tmp_path}/models/little.onnx"
    assert docs[2]["spec"]["url"] == f"{tmp_path}/data/test.csv"
    edge, cloud = _containers(docs)
    assert edge["command"] == ["/venv/bin/python", "edge_worker.py"]
    assert edge["workingDir"] == f"{tmp_path}/workers"
    assert {"name": "output_url", "value": f"{tmp_path}/output/results.jsonl"} in edge["env"]
    assert cloud["command"] == ["/bin/sh", "-c"]
    assert cloud["args"][0].startswith("exec /venv/bin/sedna-inference --model-name")
    assert '"$MODEL_URL"' in cloud["args"][0]
    assert {"name": "BIG_MODEL_BIND_PORT", "value": "24001"} in cloud["env"]
    hem = docs[3]["spec"]["edgeWorker"]["hardExampleMining"]
    assert hem["parameters"] == [{"key": "threshold_cross_entropy", "value": "0.3"}]
    for doc in docs:
        assert validate_object(doc).status == "valid"
    assert example["manifests"].service_name(docs) == "digits-inference-example"


def test_render_the_script_cloud_worker(tmp_path: Path, example: dict[str, ModuleType]) -> None:
    docs = _render(example, tmp_path, cloud_worker="script")
    _, cloud = _containers(docs)
    assert cloud["command"] == ["/venv/bin/python", "cloud_worker.py"]
    assert "args" not in cloud
    assert not any(e["name"] == "BIG_MODEL_BIND_PORT" for e in cloud["env"])
    with pytest.raises(ValueError, match="cloud worker must be one of"):
        _render(example, tmp_path, cloud_worker="triton")


def test_edge_worker_helpers(tmp_path: Path, example: dict[str, ModuleType]) -> None:
    edge = example["edge_worker"]
    assert edge.label_of(None) is None
    assert edge.label_of(np.array([[0.1, 0.7, 0.2]])) == 1
    assert edge.label_of([]) is None
    dataset = tmp_path / "test.csv"
    row = ",".join(["4", *["1"] * 64])
    dataset.write_text(f"label,p0\n{row}\n{row}\n4,1,2")  # the last row is still being written
    rows = edge.read_rows(dataset, 0)
    assert [(i, label) for i, label, _ in rows] == [(0, 4), (1, 4)]
    assert rows[0][2].shape == (8, 8)
    assert [i for i, _, _ in edge.read_rows(dataset, 1)] == [1]
    output = tmp_path / "results.jsonl"
    assert edge.done_indices(output) == set()
    output.write_text('{"index": 0}\n{"index": 5}\nnot json\n{"index": 2, "tr')
    assert edge.done_indices(output) == {0, 5}
