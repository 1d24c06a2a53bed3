"""Kubernetes placement on the API emulator: fields reach the API as written, nodes read back.

The emulator has no scheduler: the tests bind pods the way it would (``spec.nodeName``) and
create a Deployment's pods the way its ReplicaSet would.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

from kubernetes import client as k8s

from sedna.resources.worker import WorkerOwner
from sedna_gm.workloads import WorkerEnvSettings, build_worker, deployment_name, worker_name
from sedna_gm.workloads.kubernetes import KubernetesWorkloadRuntime
from sedna_gm.workloads.placement import worker_nodes

OWNER = WorkerOwner(
    api_version="sedna.io/v1alpha1",
    kind="FederatedLearningJob",
    name="fl",
    namespace="default",
    uid="uid-fl",
)
PLACEMENT: dict[str, Any] = {
    "nodeSelector": {"gpu": "true"},
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                ]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 10,
                    "preference": {
                        "matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]
                    },
                }
            ],
        }
    },
    "tolerations": [{"key": "node-role.kubernetes.io/edge", "effect": "NoSchedule"}],
}


def _template() -> dict[str, Any]:
    return {
        "spec": {
            "containers": [{"name": "train", "image": "train:v1", "command": ["python3"]}],
            **copy.deepcopy(PLACEMENT),
        }
    }


def _core(cluster: Any) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(cluster.api_client)


async def _read(cluster: Any, read: Any, name: str) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        return json.loads(read(name, "default", _preload_content=False).data)

    return await asyncio.to_thread(run)


async def _bind(cluster: Any, pod: str, node: str) -> None:
    """What the scheduler does once it picked a node for the pod."""
    body = {"spec": {"nodeName": node}}
    await asyncio.to_thread(
        _core(cluster).patch_namespaced_pod, pod, "default", body, _preload_content=False
    )


async def test_pod_keeps_placement_and_reports_the_bound_node(cluster: Any) -> None:
    rt = KubernetesWorkloadRuntime(cluster.api_client, request_timeout_s=10)
    name = worker_name("fl", "train", "0")
    built = build_worker(
        OWNER, "train", _template(), mode=rt.mode, name=name, settings=WorkerEnvSettings()
    )
    status = await rt.ensure_worker(name, built.spec)
    assert (status.node_name, status.nodes) == ("", ())  # unscheduled

    pod = await _read(cluster, _core(cluster).read_namespaced_pod, name)
    for key, value in PLACEMENT.items():
        assert pod["spec"][key] == value
    assert "nodeName" not in pod["spec"]

    [listed] = await rt.list_workers(OWNER)
    assert listed.node_name == ""
    assert worker_nodes([listed]) == ()

    await _bind(cluster, name, "edge-7")
    [listed] = await rt.list_workers(OWNER)
    assert (listed.node_name, listed.nodes) == ("edge-7", ("edge-7",))
    assert (await rt.ensure_worker(name, built.spec)).node_name == "edge-7"
    assert worker_nodes(await rt.list_workers(OWNER), worker_type="train") == ("edge-7",)


async def test_deployment_worker_resolves_from_its_pods(cluster: Any) -> None:
    rt = KubernetesWorkloadRuntime(cluster.api_client, request_timeout_s=10)
    name = deployment_name("fl", "train")
    built = build_worker(
        OWNER, "train", _template(), mode=rt.mode, name=name, settings=WorkerEnvSettings()
    )
    status = await rt.ensure_worker(name, built.spec, replicas=3)
    assert status.nodes == ()
    apps = k8s.AppsV1Api(cluster.api_client)
    dep = await _read(cluster, apps.read_namespaced_deployment, name)
    template = dep["spec"]["template"]
    for key, value in PLACEMENT.items():
        assert template["spec"][key] == value

    # The ReplicaSet's pods: two bound to nodes, one not yet scheduled, one finished.
    rs_ref = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": f"{name}-5d8f",
        "uid": "uid-rs",
        "controller": True,
    }

    def create(pod: str, node: str | None, phase: str = "Running") -> None:
        spec = copy.deepcopy(template["spec"])
        if node:
            spec["nodeName"] = node
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod,
                "labels": template["metadata"]["labels"],
                "ownerReferences": [rs_ref],
            },
            "spec": spec,
            "status": {"phase": phase},
        }
        _core(cluster).create_namespaced_pod("default", body, _preload_content=False)

    for pod, node, phase in [
        ("r1", "edge-2", "Running"),
        ("r2", "edge-1", "Running"),
        ("r3", None, "Pending"),
        ("r4", "edge-9", "Failed"),
    ]:
        await asyncio.to_thread(create, pod, node, phase)

    [listed] = await rt.list_workers(OWNER)  # the pods themselves are not workers
    assert (listed.name, listed.node_name, listed.replica_nodes) == (
        name,
        "edge-1",
        ("edge-1", "edge-2"),
    )
    again = await rt.ensure_worker(name, built.spec, replicas=3)
    assert again.replica_nodes == ("edge-1", "edge-2")

    await _bind(cluster, "r3", "edge-3")
    assert worker_nodes(await rt.list_workers(OWNER)) == ("edge-1", "edge-2", "edge-3")
