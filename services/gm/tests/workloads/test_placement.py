"""Node placement rules: the nodeSelector/affinity matcher, validation, ranking, resolving."""

from __future__ import annotations

from typing import Any

import pytest

from sedna.resources.worker import WorkerOwner, WorkerPhaseName, WorkerSpec
from sedna_gm.workloads import RuntimeMode, WorkerEnvSettings, WorkerStatus, build_worker
from sedna_gm.workloads.placement import (
    NodeCandidate,
    NodePlacement,
    NodeSelectorTerm,
    Operator,
    PlacementError,
    Requirement,
    choose_node,
    pod_nodes,
    unschedulable_message,
    worker_nodes,
)

REQ = "requiredDuringSchedulingIgnoredDuringExecution"
PREF = "preferredDuringSchedulingIgnoredDuringExecution"
TERMS = f"spec.affinity.nodeAffinity.{REQ}.nodeSelectorTerms"


def _required(*terms: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "affinity": {
            "nodeAffinity": {REQ: {"nodeSelectorTerms": [{"matchExpressions": t} for t in terms]}}
        }
    }
    spec.update(extra)
    return spec


def _expr(key: str, op: str, *values: str) -> dict[str, Any]:
    body: dict[str, Any] = {"key": key, "operator": op}
    if values:
        body["values"] = list(values)
    return body


def _fields(*requirements: dict[str, Any]) -> dict[str, Any]:
    term = {"matchFields": list(requirements)}
    return {"affinity": {"nodeAffinity": {REQ: {"nodeSelectorTerms": [term]}}}}


def _placement(spec: dict[str, Any]) -> NodePlacement:
    return NodePlacement.from_pod_spec(spec, "spec")


# ------------------------------------------------------------------ operators


@pytest.mark.parametrize(
    ("op", "values", "labels", "expected"),
    [
        ("In", ("a", "b"), {"zone": "a"}, True),
        ("In", ("a", "b"), {"zone": "c"}, False),
        ("In", ("a",), {}, False),
        ("NotIn", ("a", "b"), {"zone": "c"}, True),
        ("NotIn", ("a", "b"), {"zone": "a"}, False),
        ("NotIn", ("a",), {}, True),  # a missing label is "not in"
        ("Exists", (), {"zone": ""}, True),
        ("Exists", (), {}, False),
        ("DoesNotExist", (), {}, True),
        ("DoesNotExist", (), {"zone": "a"}, False),
        ("Gt", ("4",), {"zone": "8"}, True),
        ("Gt", ("4",), {"zone": "4"}, False),
        ("Gt", ("4",), {"zone": "many"}, False),  # not an integer: no match
        ("Gt", ("4",), {}, False),
        ("Lt", ("4",), {"zone": "-1"}, True),
        ("Lt", ("4",), {"zone": "4"}, False),
        ("Lt", ("4",), {}, False),
    ],
)
def test_every_operator(
    op: str, values: tuple[str, ...], labels: dict[str, str], expected: bool
) -> None:
    requirement = Requirement.parse(_expr("zone", op, *values), "x")
    assert requirement == Requirement("zone", Operator(op), values)
    assert requirement.matches(labels) is expected
    placement = _placement(_required([_expr("zone", op, *values)]))
    assert placement.matches("n1", labels) is expected
    assert (placement.why_not("n1", labels) == "") is expected


def test_terms_are_ored_and_expressions_anded() -> None:
    placement = _placement(
        _required(
            [_expr("zone", "In", "a"), _expr("gpu", "Exists")],
            [_expr("tier", "In", "cloud")],
        )
    )
    assert placement.matches("n", {"zone": "a", "gpu": "true"})
    assert not placement.matches("n", {"zone": "a"})  # AND inside a term
    assert placement.matches("n", {"tier": "cloud"})  # OR across terms
    assert not placement.matches("n", {"zone": "b", "gpu": "1", "tier": "edge"})
    assert placement.why_not("n", {"zone": "b"}) == (
        "term 1: zone=b, no gpu label; term 2: no tier label"
    )


def test_node_selector_and_affinity_must_both_hold() -> None:
    placement = _placement(
        _required([_expr("zone", "In", "a")], nodeSelector={"gpu": "true", "disk": "ssd"})
    )
    assert placement.constrained
    assert placement.matches("n", {"gpu": "true", "disk": "ssd", "zone": "a"})
    assert not placement.matches("n", {"gpu": "true", "disk": "ssd", "zone": "b"})
    assert not placement.matches("n", {"gpu": "false", "zone": "a"})
    assert placement.why_not("n", {"gpu": "false"}) == "gpu=false, no disk label"
    assert placement.describe() == (
        "nodeSelector {gpu: true, disk: ssd} and required node affinity [zone In (a)]"
    )


def test_empty_selector_matches_every_node() -> None:
    for spec in ({}, {"nodeSelector": {}}, {"nodeSelector": None, "affinity": {}}):
        placement = _placement(spec)
        assert not placement.constrained
        assert placement.matches("any", {})
        assert placement.describe() == "no constraint"


def test_empty_term_matches_no_node_and_match_fields_use_the_name() -> None:
    spec = {"affinity": {"nodeAffinity": {REQ: {"nodeSelectorTerms": [{}]}}}}
    placement = _placement(spec)
    assert not placement.matches("n", {"a": "b"})
    assert placement.why_not("n", {}) == "empty term"
    placement = _placement(_fields(_expr("metadata.name", "In", "edge-1")))
    assert placement.matches("edge-1", {})
    assert not placement.matches("edge-2", {})
    assert placement.why_not("edge-2", {}) == "name edge-2"
    assert str(placement.required[0]) == "name In (edge-1)"  # type: ignore[index]


def test_preferred_terms_score_and_rank() -> None:
    spec = {
        "affinity": {
            "nodeAffinity": {
                PREF: [
                    {"weight": 10, "preference": {"matchExpressions": [_expr("zone", "In", "a")]}},
                    {"weight": 50, "preference": {"matchExpressions": [_expr("gpu", "Exists")]}},
                ]
            }
        }
    }
    placement = _placement(spec)
    assert not placement.constrained
    assert placement.score("n", {"zone": "a", "gpu": "1"}) == 60
    assert placement.score("n", {"zone": "b"}) == 0
    nodes = [
        NodeCandidate("a-node", {"zone": "a"}, workers=0),
        NodeCandidate("b-node", {"gpu": "1"}, workers=5),
    ]
    assert choose_node(placement, nodes) == "b-node"  # preference beats load


def test_ranking_connected_then_current_then_load_then_name() -> None:
    anywhere = NodePlacement()
    nodes = [
        NodeCandidate("c", {}, connected=False, workers=0),
        NodeCandidate("b", {}, workers=2),
        NodeCandidate("a", {}, workers=2),
        NodeCandidate("d", {}, workers=3),
    ]
    assert choose_node(anywhere, nodes) == "a"  # connected, fewest workers, then name
    assert choose_node(anywhere, nodes, current="d") == "d"  # no needless move
    assert choose_node(anywhere, nodes, current="c") == "a"  # but connected first
    assert choose_node(anywhere, nodes[:1]) == "c"  # a disconnected node still fits
    assert choose_node(anywhere, []) is None


def test_unschedulable_message_names_every_node() -> None:
    placement = _placement({"nodeSelector": {"gpu": "true"}})
    nodes = [
        NodeCandidate("edge-1", {"kubernetes.io/hostname": "edge-1"}),
        NodeCandidate("cloud", {"gpu": "false"}),
    ]
    assert choose_node(placement, nodes) is None
    assert unschedulable_message(placement, nodes) == (
        "no node matches nodeSelector {gpu: true}: nodes cloud (gpu=false), edge-1 (no gpu label)"
    )
    assert unschedulable_message(placement, []) == (
        "no node matches nodeSelector {gpu: true}: no node has connected to the GlobalManager yet"
    )
    many = [NodeCandidate(f"n{i:02}", {}) for i in range(13)]
    assert unschedulable_message(placement, many).endswith("n09 (no gpu label) and 3 more")
    affinity = _placement(_required([_expr("cores", "Gt", "8")]))
    message = unschedulable_message(affinity, [NodeCandidate("x", {"cores": "lots"})])
    assert message == (
        "no node matches required node affinity [cores Gt 8]: node x (cores=lots, not an integer)"
    )


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"nodeSelector": ["gpu"]}, "spec.nodeSelector: must be a mapping"),
        (
            {"nodeSelector": {"gpu": True}},
            'spec.nodeSelector.gpu: true is not a string (quote it: "true")',
        ),
        ({"nodeSelector": {"cores": 4}}, "spec.nodeSelector.cores: 4 is not a string"),
        ({"nodeSelector": {"bad key!": "x"}}, "spec.nodeSelector: 'bad key!' is not a valid"),
        ({"nodeSelector": {"Example.com/x": "y"}}, "prefix before '/' must be a DNS subdomain"),
        ({"nodeSelector": {"zone": "a b"}}, "spec.nodeSelector.zone: 'a b' is not a valid label"),
        ({"nodeName": 3}, "spec.nodeName: must be a string"),
        ({"affinity": "near"}, "spec.affinity: must be a mapping"),
        (
            {"affinity": {"nodeAffinity": {REQ: {"nodeSelectorTerms": []}}}},
            f"{TERMS}: Required value: must have at least one node selector term",
        ),
        (
            {"affinity": {"nodeAffinity": {REQ: {"nodeSelectorTerms": {"a": 1}}}}},
            f"{TERMS}: must be a list",
        ),
        (_required([{"operator": "In", "values": ["a"]}]), f"{TERMS}[0].matchExpressions[0].key"),
        (
            _required([_expr("zone", "Equals", "a")]),
            f"{TERMS}[0].matchExpressions[0].operator: 'Equals' is not one of In, NotIn, "
            "Exists, DoesNotExist, Gt, Lt",
        ),
        (
            _required([{"key": "zone"}]),
            f"{TERMS}[0].matchExpressions[0].operator: an empty operator is not one of",
        ),
        (
            _required([], [_expr("zone", "In")]),
            f"{TERMS}[1].matchExpressions[0].values: must be non-empty for operator In",
        ),
        (
            _required([_expr("zone", "Exists", "a")]),
            f"{TERMS}[0].matchExpressions[0].values: must be empty for operator Exists",
        ),
        (
            _required([_expr("zone", "DoesNotExist", "a")]),
            "values: must be empty for operator DoesNotExist",
        ),
        (
            _required([_expr("cores", "Gt", "1", "2")]),
            f"{TERMS}[0].matchExpressions[0].values: operator Gt takes exactly one value",
        ),
        (
            _required([_expr("cores", "Lt", "x")]),
            f"{TERMS}[0].matchExpressions[0].values[0]: 'x' is not an integer (operator Lt)",
        ),
        (
            _required([{"key": "gpu", "operator": "In", "values": [True]}]),
            f'{TERMS}[0].matchExpressions[0].values[0]: true is not a string (quote it: "true")',
        ),
        (
            _fields(_expr("zone", "In", "a")),
            f"{TERMS}[0].matchFields[0].key: 'zone' is not supported",
        ),
        (
            _fields(_expr("metadata.name", "Exists")),
            f"{TERMS}[0].matchFields[0].operator: 'Exists' is not one of In, NotIn",
        ),
        (
            _fields(_expr("metadata.name", "In", "a", "b")),
            f"{TERMS}[0].matchFields[0].values: matchFields takes exactly one value",
        ),
        (
            {"affinity": {"nodeAffinity": {PREF: [{"weight": 0, "preference": {}}]}}},
            f"spec.affinity.nodeAffinity.{PREF}[0].weight: must be an integer in 1-100",
        ),
        (
            {"affinity": {"nodeAffinity": {PREF: [{"weight": 5}]}}},
            f"spec.affinity.nodeAffinity.{PREF}[0].preference: Required value",
        ),
    ],
)
def test_bad_values_name_the_field(spec: dict[str, Any], error: str) -> None:
    with pytest.raises(PlacementError) as info:
        _placement(spec)
    assert error in str(info.value)


def test_term_strings() -> None:
    term = NodeSelectorTerm.parse(
        {"matchExpressions": [_expr("zone", "In", "a", "b"), _expr("gpu", "DoesNotExist")]}, "t"
    )
    assert str(term) == "zone In (a, b) and gpu DoesNotExist"
    assert str(NodeSelectorTerm()) == "<empty term>"


# ------------------------------------------------------------------ builder


OWNER = WorkerOwner(
    api_version="sedna.io/v1alpha1", kind="FederatedLearningJob", name="fl", namespace="ns", uid="u"
)


def _template(**pod: Any) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "w", "image": "img", "command": ["run"]}], **pod}}


@pytest.mark.parametrize("mode", list(RuntimeMode))
def test_builder_keeps_placement_fields_as_written(mode: RuntimeMode) -> None:
    placement = {
        "nodeSelector": {"gpu": "true"},
        "affinity": _required([_expr("zone", "In", "a")])["affinity"],
        "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
    }
    built = build_worker(
        OWNER,
        "train",
        _template(**placement),
        mode=mode,
        name="fl-train-abcde",
        settings=WorkerEnvSettings(),
    )
    pod = built.spec.template["spec"]
    for key, value in placement.items():
        assert pod[key] == value
    assert built.spec.node_name == ""


def test_builder_rejects_bad_selector_with_the_resource_path() -> None:
    with pytest.raises(PlacementError, match=r"^spec\.trainingWorkers\[0\]\.template\.spec\."):
        build_worker(
            OWNER,
            "train",
            _template(nodeSelector={"gpu": True}),
            mode=RuntimeMode.LOCAL,
            name="fl-train-abcde",
            settings=WorkerEnvSettings(),
            template_path="spec.trainingWorkers[0].template",
        )


# ------------------------------------------------------------------ resolving


def _pod(name: str, node: str | None, phase: str = "Running", **labels: str) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "metadata": {"name": name, "labels": {"app": "x", **labels}},
        "spec": {},
        "status": {"phase": phase},
    }
    if node:
        pod["spec"]["nodeName"] = node
    return pod


def test_pod_nodes_live_bound_and_selected_only() -> None:
    deleting = _pod("p5", "n5")
    deleting["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    pods = [
        _pod("p1", "n2"),
        _pod("p2", "n1"),
        _pod("p3", "n1", phase="Pending"),
        _pod("p4", None),
        deleting,
        _pod("p6", "n6", phase="Failed"),
        _pod("p7", "n7", app="other"),
    ]
    assert pod_nodes(pods, {"app": "x"}) == ("n1", "n2")
    assert pod_nodes(pods, {}) == ()


def test_worker_nodes_helper() -> None:
    statuses = [
        WorkerStatus("a", "ns", node_name="edge-1", worker_type="train"),
        WorkerStatus("b", "ns", node_name="", worker_type="train"),  # unscheduled
        WorkerStatus(
            "c", "ns", node_name="n1", replica_nodes=("n1", "n3"), worker_type="inference"
        ),
        WorkerStatus("d", "ns", node_name="old", worker_type="train", deleting=True),
        WorkerStatus(
            "e", "ns", node_name="edge-2", worker_type="train", phase=WorkerPhaseName.SUCCEEDED
        ),
    ]
    assert statuses[2].nodes == ("n1", "n3")
    assert statuses[1].nodes == ()
    assert worker_nodes(statuses) == ("edge-1", "edge-2", "n1", "n3")
    assert worker_nodes(statuses, worker_type="Train") == ("edge-1", "edge-2")
    assert worker_nodes(statuses, worker_type="train", include=lambda s: not s.finished) == (
        "edge-1",
    )


def test_worker_spec_template_round_trip_keeps_affinity() -> None:
    # The local runtime re-reads placement from the spec stored in the Worker object.
    spec = WorkerSpec(
        owner=OWNER,
        worker_type="train",
        command=["x"],
        template=_template(nodeSelector={"gpu": "true"}),
    )
    stored = spec.model_dump(by_alias=True, mode="json")
    assert NodePlacement.from_pod_spec(stored["template"]["spec"]).node_selector == {"gpu": "true"}
