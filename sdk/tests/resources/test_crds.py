"""The generated CRDs: in sync with the models, valid for Kubernetes, structural, complete."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import celpy
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from sedna.resources import all_kinds, crd_filename, crd_manifest, render_crds
from sedna.resources.schema import CRD_HEADER, SchemaError, model_schema

CRDS = Path(__file__).resolve().parents[3] / "crds"
UPSTREAM_SHORT_NAMES = {"fe", "fl", "il", "ji", "ll", "objs", "objt", "reid", "va"}
# The only default in the schemas is upstream's own: deploySpec.model.pollPeriodSeconds = 60.
EXPECTED_DEFAULTS = {
    ("IncrementalLearningJob", ".spec.deploySpec.model.pollPeriodSeconds"): 60,
}
KUBE_VERSIONS = ["1.30", latest_version()]


def _crd_files() -> list[str]:
    return sorted(path.name for path in CRDS.glob("sedna.io_*.yaml"))


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CRDS / name).read_text(encoding="utf-8"))
    return data


def _walk(node: dict[str, Any], path: str = "") -> Any:
    """Yield (path, schema node) for every node of a schema."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_committed_crds_match_the_models() -> None:
    rendered = render_crds()
    assert _crd_files() == sorted(rendered), "crds/ holds other files than the generator makes"
    stale = [name for name, text in rendered.items() if (CRDS / name).read_text("utf-8") != text]
    assert not stale, f"crds/ is out of date, run 'make crds': {stale}"


def test_rendering_is_deterministic() -> None:
    assert render_crds() == render_crds()
    assert all(text.startswith(CRD_HEADER) for text in render_crds().values())


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", _crd_files())
def test_crd_is_a_valid_apiextensions_object(name: str, version: str) -> None:
    kubernetes_validate.validate(_load(name), version, strict=True)


def test_strict_validation_would_catch_a_typo() -> None:
    crd = _load("sedna.io_datasets.yaml")
    crd["spec"]["versions"][0]["additionalPrinterColums"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(crd, KUBE_VERSIONS[0], strict=True)


@pytest.mark.parametrize("info", all_kinds(), ids=lambda info: info.kind)
def test_crd_shape(info: Any) -> None:
    crd = crd_manifest(info)
    assert crd_filename(info) == f"sedna.io_{info.plural}.yaml"
    assert crd["metadata"]["name"] == f"{info.plural}.sedna.io"
    spec = crd["spec"]
    assert spec["group"] == "sedna.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == info.kind
    assert spec["names"]["listKind"] == f"{info.kind}List"
    assert "sedna" in spec["names"]["categories"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = version["additionalPrinterColumns"]
    assert columns[-1]["name"] == "Age"
    assert columns[-1]["jsonPath"] == ".metadata.creationTimestamp"
    assert len({column["name"] for column in columns}) == len(columns)


def test_short_names_are_upstreams_and_clash_with_nothing() -> None:
    short = {name for info in all_kinds() for name in info.short_names}
    assert short == UPSTREAM_SHORT_NAMES
    by_kind = {info.kind: info.short_names for info in all_kinds()}
    assert by_kind["Dataset"] == ()
    assert by_kind["Model"] == ()
    # Built-in short names kubectl already uses.
    assert not short & {"ds", "deploy", "po", "svc", "cm", "ns", "no", "pv", "pvc", "sa", "rs"}


def test_printer_columns_per_kind() -> None:
    names = {
        info.kind: [column.name for column in info.all_printer_columns] for info in all_kinds()
    }
    assert names["Dataset"][:3] == ["Node", "Format", "Samples"]
    assert names["JointInferenceService"][:5] == [
        "Phase",
        "Active",
        "Failed",
        "Inferences",
        "Hard Examples",
    ]
    assert names["FederatedLearningJob"][:5] == ["Phase", "Round", "Active", "Succeeded", "Failed"]
    for kind in ("IncrementalLearningJob", "LifelongLearningJob"):
        assert names[kind][:3] == ["Phase", "Stage", "State"]
    for info in all_kinds():
        stage = [c for c in info.all_printer_columns if c.name == "Stage"]
        if stage:
            assert stage[0].json_path == ".status.conditions[-1:].stage"


def _schema_node(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    # Drop filters and slices: `.status.metrics[?(@.key=="x")].value` -> status.metrics[].value
    plain = re.sub(r"\[[^\]]*\]", "[]", json_path)
    for part in plain.strip(".").split("."):
        name, is_list = part.removesuffix("[]"), part.endswith("[]")
        if node is None:
            return None
        node = node.get("properties", {}).get(name)
        if node is not None and is_list:
            node = node.get("items")
    return node


@pytest.mark.parametrize("info", all_kinds(), ids=lambda info: info.kind)
def test_printer_columns_point_at_fields_that_exist(info: Any, schemas: Any) -> None:
    root = schemas[info.kind]
    root = {
        **root,
        "properties": {
            **root["properties"],
            "metadata": {"type": "object", "properties": {"creationTimestamp": {"type": "string"}}},
        },
    }
    for column in info.all_printer_columns:
        node = _schema_node(root, column.json_path)
        assert node is not None, f"{info.kind} column {column.name}: {column.json_path}"
        expected = {"date": "string"}.get(column.type, column.type)
        assert node["type"] == expected, column.name


@pytest.mark.parametrize("name", _crd_files())
def test_schema_is_structural(name: str) -> None:
    crd = _load(name)
    kind = crd["spec"]["names"]["kind"]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert schema["required"] == ["spec"]
    for path, node in _walk(schema):
        where = f"{kind}{path}"
        assert "type" in node, f"{where}: no type"
        for forbidden in ("$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "nullable"):
            assert forbidden not in node, f"{where}: {forbidden}"
        assert node.get("additionalProperties") is not False, where
        assert not ("properties" in node and "additionalProperties" in node), where
        assert set(node.get("required", [])) <= set(node.get("properties", {})), where
        if "default" in node:
            assert EXPECTED_DEFAULTS.get((kind, path)) == node["default"], where
        is_property = not path.endswith(("[]", "{}"))
        if path.startswith(".spec") and path.count(".") > 1 and is_property:
            assert node.get("description"), f"{where}: no description"
        if node["type"] == "object" and "properties" not in node:
            opaque = node.get("x-kubernetes-preserve-unknown-fields")
            # Deliberately field-less: the root metadata (the API server owns its schema), maps
            # (additionalProperties) and the websocket transmitter, which has no settings.
            assert (
                opaque
                or "additionalProperties" in node
                or path in {".metadata"}
                or (path.endswith(".ws"))
            ), f"{where}: object without fields"


def _root(info: Any) -> dict[str, Any]:
    schema: dict[str, Any] = crd_manifest(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_defaults_are_only_upstreams() -> None:
    found = {}
    for info in all_kinds():
        for path, node in _walk(
            crd_manifest(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        ):
            if "default" in node:
                found[(info.kind, path)] = node["default"]
    assert found == EXPECTED_DEFAULTS


def test_every_cel_rule_compiles() -> None:
    env = celpy.Environment()
    rules = [
        rule["rule"]
        for info in all_kinds()
        for _, node in _walk(_root(info))
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert rules
    for rule in rules:
        env.compile(rule)


def test_unions_are_refused() -> None:
    from pydantic import BaseModel

    class Bad(BaseModel):
        value: int | str

    with pytest.raises(SchemaError, match="value"):
        model_schema(Bad)
