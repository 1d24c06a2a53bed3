"""HorizontalPodAutoscalers of service workers: the body builder and the Kubernetes runtime.

The runtime tests go through the real client against the API emulator, which serves
``autoscaling/v2`` ``horizontalpodautoscalers`` (kmock's bundled built-in resources). The
emulator runs no HPA controller: scaling is simulated by writing the Deployment's
``spec.replicas`` as the HPA controller would (through the scale of the Deployment).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import kmock
import pytest
from kubernetes import client as k8s

from sedna.resources.worker import WorkerSpec
from sedna_gm.workloads import (
    RuntimeMode,
    WorkerEnvSettings,
    WorkloadError,
    build_worker,
    deployment_name,
    k8s_objects,
    owner_of,
)
from sedna_gm.workloads.kubernetes import KubernetesWorkloadRuntime
from sedna_gm.workloads.port import spec_hash

from .conftest import load_example

HPA = {
    "minReplicas": 2,
    "maxReplicas": 5,
    "metrics": [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 60},
            },
        }
    ],
    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 120}},
}


def _cloud_worker(name: str, *, image: str = "") -> WorkerSpec:
    ji = load_example("helmet-detection-joint-inference-s3.yaml", "JointInferenceService")
    template = json.loads(json.dumps(ji.spec["cloudWorker"]["template"]))
    if image:
        template["spec"]["containers"][0]["image"] = image
    return build_worker(
        owner_of(ji),
        "cloud",
        template,
        mode=RuntimeMode.KUBERNETES,
        name=name,
        settings=WorkerEnvSettings(),
        feature_env={"BIG_MODEL_BIND_PORT": "5000"},
    ).spec


# --- the body builder ------------------------------------------------------------------------


def test_autoscaler_body_targets_the_deployment_with_upstream_name_labels_and_owner() -> None:
    name = "helmet-detection-inference-example-deployment-cloud"
    spec = _cloud_worker(name)
    body = k8s_objects.autoscaler_body(name, spec, HPA, "abc")
    assert body["apiVersion"] == "autoscaling/v2"
    assert body["kind"] == "HorizontalPodAutoscaler"
    meta = body["metadata"]
    assert meta["name"] == f"hpa-{name}" == k8s_objects.autoscaler_name(name)
    assert meta["namespace"] == "default"
    assert meta["labels"] == spec.labels
    assert meta["labels"]["jointinferenceservice.sedna.io/worker-type"] == "cloud"
    assert meta["annotations"] == {k8s_objects.SPEC_HASH_ANNOTATION: "abc"}
    assert meta["ownerReferences"] == [k8s_objects.owner_reference(spec.owner)]
    assert body["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        **HPA,
    }
    # The spec's dicts are copied, not shared.
    body["spec"]["metrics"][0]["type"] = "Pods"
    assert HPA["metrics"][0]["type"] == "Resource"  # type: ignore[index]


def test_autoscaler_body_leaves_defaults_to_the_api_server() -> None:
    spec = _cloud_worker("w")
    body = k8s_objects.autoscaler_body("w", spec, {"maxReplicas": 3}, "h")
    assert body["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "w"},
        "maxReplicas": 3,
    }


@pytest.mark.parametrize(
    ("hpa", "message"),
    [
        ({}, "hpa.maxReplicas must be a positive integer, not None"),
        ({"maxReplicas": 0}, "hpa.maxReplicas must be a positive integer, not 0"),
        ({"maxReplicas": True}, "hpa.maxReplicas must be a positive integer"),
        ({"maxReplicas": 2, "minReplicas": 3}, "hpa.minReplicas must be an integer from 1 to"),
        ({"maxReplicas": 2, "minReplicas": 0}, "hpa.minReplicas must be an integer from 1 to"),
    ],
)
def test_autoscaler_body_rejects_bad_bounds(hpa: dict[str, Any], message: str) -> None:
    with pytest.raises(WorkloadError, match="horizontalpodautoscaler default/hpa-w: " + message):
        k8s_objects.autoscaler_body("w", _cloud_worker("w"), hpa, "h")


def test_deployment_body_names_its_autoscaler() -> None:
    spec = _cloud_worker("w")
    plain = k8s_objects.deployment_body("w", spec, "h", 1)
    assert k8s_objects.AUTOSCALER_ANNOTATION not in plain["metadata"]["annotations"]
    scaled = k8s_objects.deployment_body("w", spec, "h", 2, autoscaled=True)
    assert scaled["metadata"]["annotations"][k8s_objects.AUTOSCALER_ANNOTATION] == "hpa-w"
    assert scaled["spec"]["replicas"] == 2


def test_spec_hash_counts_the_autoscaler_only_when_given() -> None:
    spec = _cloud_worker("w")
    assert spec_hash(spec, 1) == spec_hash(spec, 1, None)
    assert spec_hash(spec, 2, HPA) != spec_hash(spec, 2)
    assert spec_hash(spec, 2, HPA) != spec_hash(spec, 2, {**HPA, "maxReplicas": 6})


# --- the Kubernetes runtime ------------------------------------------------------------------


async def _read(cluster: Any, kind: str, name: str) -> dict[str, Any] | None:
    apps, autoscaling = k8s.AppsV1Api(cluster.api_client), k8s.AutoscalingV2Api(cluster.api_client)
    read = {
        "deployment": apps.read_namespaced_deployment,
        "hpa": autoscaling.read_namespaced_horizontal_pod_autoscaler,
    }[kind]

    def run() -> dict[str, Any] | None:
        try:
            data = json.loads(read(name, "default", _preload_content=False).data)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        assert isinstance(data, dict)
        return data

    return await asyncio.to_thread(run)


async def _replicas(cluster: Any, name: str) -> int:
    dep = await _read(cluster, "deployment", name)
    assert dep is not None
    return int(dep["spec"]["replicas"])


async def _scale(cluster: Any, name: str, replicas: int) -> None:
    """What the HPA controller does: set the Deployment's replicas (its scale subresource)."""

    def run() -> None:
        k8s.AppsV1Api(cluster.api_client).patch_namespaced_deployment(
            name, "default", {"spec": {"replicas": replicas}}, _preload_content=False
        )

    await asyncio.to_thread(run)


def _hpa_calls(cluster: Any) -> int:
    return sum("horizontalpodautoscalers" in str(r.url) for r in cluster.emulator._requests)


async def test_autoscaler_follows_the_worker_and_owns_the_replica_count(cluster: Any) -> None:
    rt = KubernetesWorkloadRuntime(cluster.api_client, request_timeout_s=10)
    ji = load_example("helmet-detection-joint-inference-s3.yaml", "JointInferenceService")
    name = deployment_name(ji.name, "cloud")
    hpa_name = f"hpa-{name}"
    spec = _cloud_worker(name)

    # Without an hpa: no HPA, and not a single autoscaling call.
    await rt.ensure_worker(name, spec, replicas=1)
    await rt.ensure_worker(name, spec, replicas=1)
    assert await _read(cluster, "hpa", hpa_name) is None
    assert _hpa_calls(cluster) == 1  # only the test's own read

    # Adding the hpa creates the HPA; the Deployment names it and keeps its live count
    # (the HPA controller brings it up to minReplicas).
    status = await rt.ensure_worker(name, spec, replicas=2, autoscaler=HPA)
    assert status.spec_hash == spec_hash(spec, 2, HPA)
    hpa = await _read(cluster, "hpa", hpa_name)
    assert hpa is not None
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": name,
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["metrics"] == HPA["metrics"]
    assert hpa["spec"]["behavior"] == HPA["behavior"]
    [ref] = hpa["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
        "JointInferenceService",
        ji.name,
        ji.uid,
        True,
    )
    assert hpa["metadata"]["labels"]["jointinferenceservice.sedna.io/name"] == ji.name
    dep = await _read(cluster, "deployment", name)
    assert dep is not None
    assert dep["spec"]["replicas"] == 1
    assert dep["metadata"]["annotations"][k8s_objects.AUTOSCALER_ANNOTATION] == hpa_name

    # The HPA scales the Deployment to 4: reconciles leave that count alone...
    await _scale(cluster, name, 4)
    before = _hpa_calls(cluster)
    await rt.ensure_worker(name, spec, replicas=2, autoscaler=HPA)
    assert _hpa_calls(cluster) == before  # an unchanged worker costs no HPA call
    assert await _replicas(cluster, name) == 4

    # ...and so does a template change (a rolling update keeps the HPA's count).
    new_spec = _cloud_worker(name, image="big:v2")
    await rt.ensure_worker(name, new_spec, replicas=2, autoscaler=HPA)
    dep = await _read(cluster, "deployment", name)
    assert dep is not None
    assert dep["spec"]["replicas"] == 4
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "big:v2"

    # An hpa edit replaces the HPA in place; the Deployment still keeps 4.
    edited = {**HPA, "minReplicas": 1, "maxReplicas": 8}
    hpa_rv, hpa_uid = hpa["metadata"]["resourceVersion"], hpa["metadata"]["uid"]
    await rt.ensure_worker(name, new_spec, replicas=1, autoscaler=edited)
    hpa = await _read(cluster, "hpa", hpa_name)
    assert hpa is not None
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 8)
    assert hpa["metadata"]["resourceVersion"] != hpa_rv
    assert hpa["metadata"]["uid"] == hpa_uid  # the same object, replaced
    assert await _replicas(cluster, name) == 4

    # Removing the hpa deletes the HPA; the controller owns the count again.
    await rt.ensure_worker(name, new_spec, replicas=1)
    assert await _read(cluster, "hpa", hpa_name) is None
    assert await _replicas(cluster, name) == 1
    dep = await _read(cluster, "deployment", name)
    assert dep is not None
    assert k8s_objects.AUTOSCALER_ANNOTATION not in dep["metadata"]["annotations"]


async def test_a_new_deployment_starts_at_min_replicas_and_takes_its_hpa_along(
    cluster: Any,
) -> None:
    rt = KubernetesWorkloadRuntime(cluster.api_client, request_timeout_s=10)
    name = "ji-deployment-cloud"
    hpa_name = f"hpa-{name}"
    new_spec = _cloud_worker(name)
    # Deleting the worker deletes its HPA (no garbage collector in the emulator, nor needed).
    await rt.ensure_worker(name, new_spec, replicas=2, autoscaler=HPA)
    assert await _read(cluster, "hpa", hpa_name) is not None
    assert await _replicas(cluster, name) == 2
    await rt.delete_worker("default", name)
    assert await _read(cluster, "hpa", hpa_name) is None
    assert await _read(cluster, "deployment", name) is None

    # A new autoscaled Deployment starts at minReplicas.
    await rt.ensure_worker(name, new_spec, replicas=2, autoscaler=HPA)
    assert await _replicas(cluster, name) == 2
    await rt.delete_worker("default", name)
    assert await _read(cluster, "hpa", hpa_name) is None
    assert await _read(cluster, "deployment", name) is None
    await rt.delete_worker("default", name)  # absent: fine


async def test_an_existing_hpa_is_adopted_and_a_failed_hpa_call_is_retried(cluster: Any) -> None:
    rt = KubernetesWorkloadRuntime(cluster.api_client, request_timeout_s=10)
    name = "ji-deployment-edge"
    spec = _cloud_worker(name)
    # An HPA left with another target (say, a Deployment deleted by hand earlier).
    stale = k8s_objects.autoscaler_body("other", spec, {"maxReplicas": 2}, "old")
    stale["metadata"]["name"] = f"hpa-{name}"

    def create() -> None:
        k8s.AutoscalingV2Api(cluster.api_client).create_namespaced_horizontal_pod_autoscaler(
            "default", stale, _preload_content=False
        )

    await asyncio.to_thread(create)

    # The API server refuses the HPA write: nothing is written, the error names the HPA.
    res = kmock.resource("autoscaling", "v2", "horizontalpodautoscalers")
    forbidden = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": "Forbidden",
        "message": "cannot update horizontalpodautoscalers",
        "code": 403,
    }
    cluster.emulator["put", res][:1] << kmock.Response(status=403, payload=forbidden)
    with pytest.raises(WorkloadError, match=f"updating horizontalpodautoscaler default/hpa-{name}"):
        await rt.ensure_worker(name, spec, replicas=1, autoscaler=HPA)
    assert await _read(cluster, "deployment", name) is None  # retried as a whole next time

    # The next reconcile adopts the HPA: its target and bounds are the worker's.
    await rt.ensure_worker(name, spec, replicas=1, autoscaler=HPA)
    hpa = await _read(cluster, "hpa", f"hpa-{name}")
    assert hpa is not None
    assert hpa["spec"]["scaleTargetRef"]["name"] == name
    assert hpa["spec"]["maxReplicas"] == 5
    assert await _read(cluster, "deployment", name) is not None


async def test_an_autoscaler_needs_a_deployment(cluster: Any) -> None:
    rt = KubernetesWorkloadRuntime(cluster.api_client, request_timeout_s=10)
    with pytest.raises(WorkloadError, match="an autoscaler needs a Deployment"):
        await rt.ensure_worker("w", _cloud_worker("w"), autoscaler=HPA)
