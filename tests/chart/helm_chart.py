"""Helpers of the Helm chart tests: the chart loaded and rendered through the real Helm library.

``helm-python-sdk`` binds Helm's Go SDK (``libhelm_c``) with ctypes, so lint and render here are
exactly what ``helm lint`` / ``helm template`` do, without a ``helm`` binary.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sedna"
HERE = Path(__file__).resolve().parent
RELEASE = "sedna"
NAMESPACE = "sedna"

# Every values file the tests render: the defaults, every option switched on, and the
# existing-Secrets variants of the connections.
VALUES_FILES = {
    "defaults": None,
    "all-options": HERE / "values-all-options.yaml",
    "existing-secrets": HERE / "values-existing-secrets.yaml",
}


class _Loader(yaml.SafeLoader):
    """PyYAML reads a bare ``=`` as YAML 1.1's "value" tag; Kubernetes (go-yaml) reads the
    string "=" (the CRDs' selector operators render unquoted through ``toYaml``)."""


_Loader.add_constructor(
    "tag:yaml.org,2002:value",
    lambda loader, node: loader.construct_scalar(node),  # type: ignore[arg-type]
)


def load_yaml_all(text: str) -> list[Any]:
    """Every document of ``text``, read as the API server reads YAML."""
    return list(yaml.load_all(text, Loader=_Loader))


def load_values(name: str) -> dict[str, Any]:
    """The values of ``VALUES_FILES[name]`` ({} for the defaults)."""
    path = VALUES_FILES[name]
    if path is None:
        return {}
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def render_chart(
    chart_dir: Path, values: dict[str, Any] | None = None, *, namespace: str = NAMESPACE
) -> dict[str, str]:
    """Template path -> rendered text, as ``helm template`` (an install) renders it."""
    chart = helm.Chart.load(str(chart_dir))
    try:
        return dict(chart.render(values or {}, name=RELEASE, namespace=namespace, is_install=True))
    finally:
        chart.close()


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of a render (NOTES.txt and empty documents left out)."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in load_yaml_all(text):
            if doc:
                assert isinstance(doc, dict), f"{path}: a document that is not a mapping"
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                doc["metadata"]["annotations"]["test.sedna.io/source"] = path
                objects.append(doc)
    return objects


def strip_source(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` without the test's own source annotation (for validation and comparison)."""
    meta = dict(obj["metadata"])
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k != "test.sedna.io/source"
    }
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return {**obj, "metadata": meta}


def source(obj: dict[str, Any]) -> str:
    """Template and object, for assertion messages."""
    meta = obj.get("metadata") or {}
    where = (meta.get("annotations") or {}).get("test.sedna.io/source", "?")
    return f"{where}: {obj.get('kind')} {meta.get('name')}"


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(object, pod spec) of every workload object."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job"):
            yield obj, obj["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            yield obj, obj["spec"]
