"""Shared paths and helpers for the resource tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from sedna.resources._yaml import load_documents
from sedna.resources.registry import all_kinds

ROOT = Path(__file__).resolve().parents[3]
CRDS = ROOT / "crds"
UPSTREAM = ROOT / "tests" / "fixtures" / "upstream_examples"
SAMPLES = Path(__file__).resolve().parent / "samples"


def load_docs(path: Path) -> list[dict[str, Any]]:
    """Every document of a manifest file, read the way `sedna validate` reads it."""
    return [doc.data for doc in load_documents(path.read_text(encoding="utf-8"))]


def crd_schemas() -> dict[str, dict[str, Any]]:
    """The committed CRDs' openAPIV3Schema, by kind."""
    schemas = {}
    for info in all_kinds():
        crd = yaml.safe_load((CRDS / f"sedna.io_{info.plural}.yaml").read_text(encoding="utf-8"))
        schemas[info.kind] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schemas


@pytest.fixture(scope="session")
def schemas() -> dict[str, dict[str, Any]]:
    return crd_schemas()


@pytest.fixture(scope="session")
def good_documents() -> dict[str, dict[str, Any]]:
    """One known-good document per kind (upstream examples first, then our samples)."""
    found: dict[str, dict[str, Any]] = {}
    for path in [*sorted(UPSTREAM.glob("*.yaml")), *sorted(SAMPLES.glob("*.yaml"))]:
        for doc in load_docs(path):
            kind = str(doc.get("kind"))
            usable = isinstance(doc.get("spec"), dict) and doc["metadata"]["name"].islower()
            if doc.get("apiVersion") == "sedna.io/v1alpha1" and kind not in found and usable:
                found[kind] = doc
    return found


@pytest.fixture
def good(good_documents: dict[str, dict[str, Any]]) -> Any:
    """Return a fresh deep copy of the good document of a kind."""

    def make(kind: str) -> dict[str, Any]:
        return copy.deepcopy(good_documents[kind])

    return make
