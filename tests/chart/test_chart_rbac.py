"""The GlobalManager's ClusterRole grants exactly the API calls its code makes.

The calls are found statically in ``services/gm/sedna_gm`` (see :mod:`chart.gm_api_calls`): a
new client call fails this test until the chart grants it, and a grant the code no longer
needs fails it too (least privilege). Wildcards are refused.
"""

from __future__ import annotations

from typing import Any

import pytest
from chart.gm_api_calls import ApiCall, Triple, find_calls, required_triples, triples_of
from chart.helm_chart import NAMESPACE, REPO

from sedna.resources.registry import all_kinds

GM_PACKAGE = REPO / "services" / "gm" / "sedna_gm"
PLURALS = sorted(k.plural for k in all_kinds())


def granted(rules: list[dict[str, Any]]) -> set[Triple]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups") or []
        for resource in rule.get("resources") or []
        for verb in rule.get("verbs") or []
    }


def cluster_role(objects: list[dict[str, Any]]) -> dict[str, Any]:
    roles = [o for o in objects if o["kind"] == "ClusterRole"]
    assert len(roles) == 1
    return roles[0]


def describe(triples: dict[Triple, list[ApiCall]], keys: set[Triple]) -> list[str]:
    lines = []
    for g, r, v in sorted(keys):
        where = sorted({f"{c.file}:{c.line}" for c in triples[(g, r, v)]})
        lines.append(f"{g or 'core'}/{r} {v} (by {', '.join(where)})")
    return lines


@pytest.fixture(scope="module")
def needed() -> dict[Triple, list[ApiCall]]:
    triples = required_triples(GM_PACKAGE, PLURALS)
    # The scan must see the adapters at all: the store and the workload runtime.
    files = {c.file for calls in triples.values() for c in calls}
    assert "sedna_gm/store/kubernetes.py" in files
    assert "sedna_gm/workloads/kubernetes.py" in files
    return triples


@pytest.mark.parametrize("values_name", ["defaults", "all-options"])
def test_cluster_role_grants_every_call_the_gm_makes(
    rendered_sets: dict[str, list[dict[str, Any]]],
    needed: dict[Triple, list[ApiCall]],
    values_name: str,
) -> None:
    rules = cluster_role(rendered_sets[values_name])["rules"]
    missing = set(needed) - granted(rules)
    assert describe(needed, missing) == [], "the GM calls these; grant them in templates/rbac.yaml"


def test_cluster_role_grants_nothing_else(
    rendered_sets: dict[str, list[dict[str, Any]]], needed: dict[Triple, list[ApiCall]]
) -> None:
    rules = cluster_role(rendered_sets["defaults"])["rules"]
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in (rule.get(field) or []), f"wildcard in {field}: {rule}"
        assert "resourceNames" not in rule
        assert "nonResourceURLs" not in rule
    extra = sorted(granted(rules) - set(needed))
    assert extra == [], "granted but never called (least privilege): remove them"


def test_binding_names_the_gm_service_account(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered_sets["defaults"]
    role = cluster_role(objects)
    bindings = [o for o in objects if o["kind"] == "ClusterRoleBinding"]
    assert len(bindings) == 1
    binding = bindings[0]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    accounts = [o for o in objects if o["kind"] == "ServiceAccount"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": accounts[0]["metadata"]["name"], "namespace": NAMESPACE}
    ]
    gm = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "sedna-gm"
    )
    assert gm["spec"]["template"]["spec"]["serviceAccountName"] == accounts[0]["metadata"]["name"]


def test_watch_namespace_binds_the_role_in_that_namespace_only(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered_sets["all-options"]
    assert not [o for o in objects if o["kind"] == "ClusterRoleBinding"]
    (binding,) = [o for o in objects if o["kind"] == "RoleBinding"]
    assert binding["metadata"]["namespace"] == "sedna-jobs"
    assert binding["roleRef"]["kind"] == "ClusterRole"


def test_the_role_covers_every_sedna_kind(rendered_sets: dict[str, list[dict[str, Any]]]) -> None:
    rules = cluster_role(rendered_sets["defaults"])["rules"]
    sedna = {r for g, r, _ in granted(rules) if g == "sedna.io"}
    assert sedna == set(PLURALS) | {f"{p}/status" for p in PLURALS}


def test_the_scan_sees_a_new_call_and_its_verb() -> None:
    """A call added anywhere in the GM is found, with its verb, group and subresource: the
    comparison above cannot pass by missing it."""
    source = """
from kubernetes import client as k8s, watch

class Recorder:
    def __init__(self, api_client):
        self.core = k8s.CoreV1Api(api_client)
        self.coordination = k8s.CoordinationV1Api(api_client)

    async def record(self, ns, body):
        await run(self.core.create_namespaced_event, ns, body)
        self.coordination.replace_namespaced_lease("gm", ns, body)

    def follow(self, ns):
        return watch.Watch().stream(self.core.list_namespaced_event, ns)

    def scale(self, ns):
        return self.core.patch_namespaced_replication_controller_scale("x", ns, {})
"""
    needed = triples_of(find_calls({"recorder.py": source}), PLURALS)
    assert set(needed) == {
        ("", "events", "create"),
        ("", "events", "list"),
        ("", "events", "watch"),
        ("coordination.k8s.io", "leases", "update"),
        ("", "replicationcontrollers/scale", "patch"),
    }
    custom = triples_of(
        find_calls(
            {
                "store.py": "import kubernetes.client as c\n"
                "api = c.CustomObjectsApi(x)\n"
                "api.patch_namespaced_custom_object_status(g, v, n, p, name, b)\n"
            }
        ),
        ["datasets"],
    )
    assert set(custom) == {("sedna.io", "datasets/status", "patch")}
