"""The chart ships the repository's CRDs unchanged, and the templated-CRD switch renders the
same objects (plus Helm's ownership labels and the keep policy)."""

from __future__ import annotations

from typing import Any

from chart.helm_chart import CHART, REPO, load_yaml_all, strip_source


def test_chart_crds_are_the_repository_crds() -> None:
    repo = {p.name: p.read_bytes() for p in sorted((REPO / "crds").glob("*.yaml"))}
    chart = {p.name: p.read_bytes() for p in sorted((CHART / "crds").glob("*.yaml"))}
    assert repo, "no CRDs in crds/"
    assert sorted(chart) == sorted(repo), "charts/sedna/crds/ and crds/ hold different files"
    drifted = [name for name in repo if chart[name] != repo[name]]
    # Fix: cp crds/*.yaml charts/sedna/crds/ (after scripts/gen_crds.py).
    assert drifted == [], f"charts/sedna/crds/ differs from crds/ in {drifted}"


def _repo_crds() -> dict[str, dict[str, Any]]:
    crds: dict[str, dict[str, Any]] = {}
    for path in sorted((REPO / "crds").glob("*.yaml")):
        for doc in load_yaml_all(path.read_text()):
            if doc:
                crds[doc["metadata"]["name"]] = doc
    return crds


def test_templated_crds_render_the_same_objects(render: Any) -> None:
    rendered = {
        o["metadata"]["name"]: strip_source(o)
        for o in render({"crds": {"templated": True}})
        if o["kind"] == "CustomResourceDefinition"
    }
    repo = _repo_crds()
    assert sorted(rendered) == sorted(repo)
    for name, crd in rendered.items():
        meta = crd["metadata"]
        assert meta["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        extra = {"app.kubernetes.io/managed-by", "app.kubernetes.io/instance"}
        original = repo[name]["metadata"]
        assert {k: v for k, v in meta["labels"].items() if k not in extra} == original.get(
            "labels", {}
        )
        assert {k: v for k, v in crd.items() if k != "metadata"} == {
            k: v for k, v in repo[name].items() if k != "metadata"
        }, f"{name}: the templated CRD differs from crds/"


def test_templated_crds_can_drop_the_keep_policy(render: Any) -> None:
    crds = [
        o
        for o in render({"crds": {"templated": True, "keep": False}})
        if o["kind"] == "CustomResourceDefinition"
    ]
    assert crds
    for crd in crds:
        assert "helm.sh/resource-policy" not in (
            strip_source(crd)["metadata"].get("annotations") or {}
        )
