"""Upstream's documented manifests apply unchanged: our validator and our CRDs accept them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sedna.resources import validate_paths
from sedna.resources._yaml import load_documents

ROOT = Path(__file__).resolve().parents[3]
UPSTREAM = ROOT / "tests" / "fixtures" / "upstream_examples"
SAMPLES = Path(__file__).resolve().parent / "samples"
FILES = sorted(UPSTREAM.glob("*.yaml"))

# Documents the upstream docs get wrong (see the folder's README.md): file, document number ->
# the field paths `sedna validate` must report, and whether the CRD schema alone rejects them
# (object names are checked by the API server itself, not by the CRD).
KNOWN_BAD: dict[tuple[str, int], tuple[set[str], bool]] = {
    ("mnist-modelbox-incremental-learning.yaml", 4): ({"metadata.name"}, False),
    ("helmet-detection-incremental-learning-s3.yaml", 2): ({"metadata.spec", "spec"}, True),
    ("helmet-detection-joint-inference-s3.yaml", 2): ({"metadata.spec", "spec"}, True),
}


def _documents(path: Path) -> list[tuple[int, Any]]:
    return [(doc.index, doc.data) for doc in load_documents(path.read_text(encoding="utf-8"))]


def test_the_fixtures_cover_every_upstream_feature() -> None:
    kinds = {
        doc["kind"]
        for path in FILES
        for _, doc in _documents(path)
        if doc["apiVersion"] == "sedna.io/v1alpha1"
    }
    assert len(FILES) >= 14
    assert kinds >= {
        "Dataset",
        "Model",
        "JointInferenceService",
        "FederatedLearningJob",
        "IncrementalLearningJob",
        "LifelongLearningJob",
    }


def test_readme_lists_every_fixture() -> None:
    readme = (UPSTREAM / "README.md").read_text(encoding="utf-8")
    for path in FILES:
        assert f"`{path.name}`" in readme, path.name


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_upstream_example_passes_sedna_validate(path: Path) -> None:
    report = validate_paths([path])
    assert report.results
    for result in report.results:
        expected = KNOWN_BAD.get((path.name, result.document))
        if expected is not None:
            assert result.status == "invalid"
            assert {error.path for error in result.errors} == expected[0]
        elif result.kind == "Secret":
            assert result.status == "skipped"
        else:
            assert result.status == "valid", [str(error) for error in result.errors]
            assert result.obj is not None
    assert report.ok == all(
        doc not in KNOWN_BAD for doc in ((path.name, r.document) for r in report.results)
    )


@pytest.mark.parametrize("path", [*FILES, *sorted(SAMPLES.glob("*.yaml"))], ids=lambda p: p.name)
def test_upstream_example_passes_the_crd_schema(path: Path, schemas: dict[str, Any]) -> None:
    for index, doc in _documents(path):
        if doc["apiVersion"] != "sedna.io/v1alpha1":
            continue
        # The CRD is OpenAPI v3; x-kubernetes-* keys are annotations to a JSON Schema validator.
        validator = jsonschema.Draft7Validator(schemas[doc["kind"]])
        errors = list(validator.iter_errors(doc))
        expected = KNOWN_BAD.get((path.name, index))
        if expected is not None and expected[1]:
            assert errors, f"document {index} should fail the CRD schema"
        else:
            assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


def test_unquoted_times_are_read_as_kubectl_reads_them() -> None:
    (_, doc), *_ = [
        item
        for item in _documents(UPSTREAM / "helmet-detection-incremental-learning.yaml")
        if item[1]["kind"] == "IncrementalLearningJob"
    ]
    # PyYAML's YAML 1.1 rules would give the base-60 integer 1200 for `end: 20:00`.
    assert doc["spec"]["trainSpec"]["trigger"]["timer"] == {"start": "02:00", "end": "20:00"}


def test_parsed_objects_keep_every_field() -> None:
    # The controllers rebuild pods from these objects: nothing the user wrote may get lost,
    # including the pod template fields the models treat as opaque.
    checked = 0
    for path in FILES:
        for result, (_, doc) in zip(validate_paths([path]).results, _documents(path), strict=True):
            if result.obj is None:
                continue
            dumped = result.obj.model_dump(mode="json", by_alias=True, exclude_unset=True)
            assert dumped == doc, f"{path.name} #{result.document}"
            checked += 1
    assert checked >= 35
