"""KubernetesWorkloadRuntime through the real client against the API emulator on loopback."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from kubernetes import client as k8s

from sedna.resources.worker import WorkerPhaseName
from sedna_gm.workloads import (
    RuntimeMode,
    S3Secret,
    StoragePlan,
    WorkerEnvSettings,
    WorkloadError,
    build_worker,
    deployment_name,
    owner_of,
    owner_selector,
    service_name,
    worker_name,
)
from sedna_gm.workloads.kubernetes import KubernetesSecretSource, KubernetesWorkloadRuntime

from .conftest import load_example

SECRET = S3Secret(
    name="mysecret", endpoint="play.min.io", access_key_id="AK", secret_access_key="SK"
)


async def _get(cluster: Any, path: str) -> dict[str, Any]:
    """GET one object through the typed client (raw JSON)."""
    parts = path.strip("/").split("/")
    ns, plural, name = parts[-3], parts[-2], parts[-1]
    core, apps = k8s.CoreV1Api(cluster.api_client), k8s.AppsV1Api(cluster.api_client)
    read = {
        "pods": core.read_namespaced_pod,
        "services": core.read_namespaced_service,
        "deployments": apps.read_namespaced_deployment,
    }[plural]

    def run() -> dict[str, Any]:
        return json.loads(read(name, ns, _preload_content=False).data)

    return await asyncio.to_thread(run)


async def test_pod_worker_body_status_roll_and_delete(cluster: Any) -> None:
    rt = KubernetesWorkloadRuntime(cluster.api_client, request_timeout_s=10)
    assert rt.mode is RuntimeMode.KUBERNETES
    job = load_example("surface-defect-detection-federated-learning.yaml", "FederatedLearningJob")
    owner = owner_of(job)
    storage = StoragePlan(RuntimeMode.KUBERNETES)
    storage.add("TRAIN_DATASET_URL", "/data/1.txt")
    storage.add("MODEL_URL", "s3://bucket/model")
    name = worker_name(job.name, "train", "0")
    built = build_worker(
        owner,
        "train",
        job.spec["trainingWorkers"][0]["template"],
        mode=rt.mode,
        name=name,
        settings=WorkerEnvSettings(),
        feature_env={"AGG_PORT": "7363"},
        storage=storage,
        s3=SECRET,
        host_network=True,
    )
    status = await rt.ensure_worker(name, built.spec)
    assert status.phase is WorkerPhaseName.PENDING
    pod = await _get(cluster, f"/api/v1/namespaces/default/pods/{name}")
    meta = pod["metadata"]
    assert meta["labels"]["federatedlearningjob.sedna.io/name"] == job.name
    assert meta["labels"]["federatedlearningjob.sedna.io/uid"] == job.uid
    assert meta["labels"]["federatedlearningjob.sedna.io/worker-type"] == "train"
    [ref] = meta["ownerReferences"]
    assert ref == {
        "apiVersion": "sedna.io/v1alpha1",
        "kind": "FederatedLearningJob",
        "name": job.name,
        "uid": job.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert pod["spec"]["nodeName"] == "edge1-node-name"
    assert pod["spec"]["restartPolicy"] == "OnFailure"
    assert pod["spec"]["hostNetwork"] is True
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["WORKER_NAME"]["value"] == name
    assert env["JOB_NAME"]["value"] == job.name
    assert env["TRAIN_DATASET_URL"]["value"] == "/home/data/data/1.txt"
    assert env["batch_size"]["value"] == "32"
    assert env["S3_ENDPOINT_URL"]["value"] == "https://play.min.io"
    assert env["ACCESS_KEY_ID"] == {
        "name": "ACCESS_KEY_ID",
        "valueFrom": {"secretKeyRef": {"name": "mysecret", "key": "ACCESS_KEY_ID"}},
    }
    assert "value" not in env["SECRET_ACCESS_KEY"]
    assert pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"] == "/home/data/data"

    # Idempotent, then observed through the list; a Deployment-managed pod is not listed.
    await rt.ensure_worker(name, built.spec)
    [listed] = await rt.list_workers(owner)
    assert (listed.name, listed.node_name, listed.spec_hash) == (
        name,
        "edge1-node-name",
        status.spec_hash,
    )

    # The kubelet reports a failure: phase, restarts and exit code are read back.
    def set_status() -> None:
        body = {
            "status": {
                "phase": "Failed",
                "containerStatuses": [
                    {
                        "name": "train-worker",
                        "restartCount": 2,
                        "state": {"terminated": {"exitCode": 137}},
                    }
                ],
            }
        }
        k8s.CoreV1Api(cluster.api_client).patch_namespaced_pod(
            name, "default", body, _preload_content=False
        )

    await asyncio.to_thread(set_status)
    [failed] = await rt.list_workers(owner)
    assert (failed.phase, failed.restart_count, failed.exit_code) == (
        WorkerPhaseName.FAILED,
        2,
        137,
    )

    # A changed spec replaces the pod.
    changed = built.spec.model_copy(update={"args": ["--epochs", "3"]})
    rolled = await rt.ensure_worker(name, changed)
    assert rolled.spec_hash != status.spec_hash
    pod = await _get(cluster, f"/api/v1/namespaces/default/pods/{name}")
    assert pod["spec"]["containers"][0]["args"] == ["--epochs", "3"]
    assert pod.get("status", {}).get("phase") != "Failed"

    await rt.delete_worker("default", name)
    assert await rt.list_workers(owner) == []
    await rt.delete_worker("default", name)  # absent: fine


async def test_deployment_and_service(cluster: Any) -> None:
    rt = KubernetesWorkloadRuntime(cluster.api_client, request_timeout_s=10)
    ji = load_example("helmet-detection-joint-inference-s3.yaml", "JointInferenceService")
    owner = owner_of(ji)
    name = deployment_name(ji.name, "cloud")
    built = build_worker(
        owner,
        "cloud",
        ji.spec["cloudWorker"]["template"],
        mode=rt.mode,
        name=name,
        settings=WorkerEnvSettings(),
        feature_env={"BIG_MODEL_BIND_PORT": "5000"},
    )
    await rt.ensure_worker(name, built.spec, replicas=1)
    dep = await _get(cluster, f"/apis/apps/v1/namespaces/default/deployments/{name}")
    assert dep["spec"]["replicas"] == 1
    assert dep["metadata"]["labels"]["app.sedna.io"] == f"{ji.name}-cloud-svc"
    assert dep["spec"]["selector"]["matchLabels"] == dep["metadata"]["labels"]
    tpl = dep["spec"]["template"]
    assert tpl["metadata"]["labels"]["jointinferenceservice.sedna.io/worker-type"] == "cloud"
    assert tpl["spec"]["restartPolicy"] == "Always"
    assert tpl["spec"]["nodeName"] == "cloud-node"
    assert {"name": "SERVICE_NAME", "value": ji.name} in tpl["spec"]["containers"][0]["env"]
    first_rv = dep["metadata"]["resourceVersion"]

    # Spec change: the template is replaced in place (a rolling update), same object.
    await rt.ensure_worker(name, built.spec, replicas=2)
    dep = await _get(cluster, f"/apis/apps/v1/namespaces/default/deployments/{name}")
    assert dep["spec"]["replicas"] == 2
    assert dep["metadata"]["resourceVersion"] != first_rv
    [status] = await rt.list_workers(owner)
    assert (status.name, status.phase) == (name, WorkerPhaseName.PENDING)

    svc_name = service_name(ji.name, "cloud")
    selector = {
        **owner_selector(owner.kind, owner.name),
        "jointinferenceservice.sedna.io/worker-type": "cloud",
    }
    endpoint = await rt.ensure_service("default", svc_name, selector, 5000, owner=owner)
    assert str(endpoint) == f"{svc_name}.default:5000"
    svc = await _get(cluster, f"/api/v1/namespaces/default/services/{svc_name}")
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [
        {"name": "tcp-0", "port": 5000, "targetPort": 5000, "protocol": "TCP"}
    ]
    assert svc["spec"]["selector"] == selector
    assert svc["metadata"]["ownerReferences"][0]["uid"] == ji.uid
    await rt.ensure_service("default", svc_name, selector, 5001, owner=owner)
    svc = await _get(cluster, f"/api/v1/namespaces/default/services/{svc_name}")
    assert svc["spec"]["ports"][0]["port"] == 5001
    # A further port (the aggregator's bulk port) is added to the existing Service.
    await rt.ensure_service(
        "default", svc_name, selector, 5001, owner=owner, extra_ports=[("bulk", 5005)]
    )
    svc = await _get(cluster, f"/api/v1/namespaces/default/services/{svc_name}")
    assert svc["spec"]["ports"] == [
        {"name": "tcp-0", "port": 5001, "targetPort": 5001, "protocol": "TCP"},
        {"name": "bulk", "port": 5005, "targetPort": 5005, "protocol": "TCP"},
    ]
    with pytest.raises(WorkloadError, match=r"port bulk \(5001\) .* repeats the main port"):
        await rt.ensure_service("default", svc_name, selector, 5001, extra_ports=[("bulk", 5001)])
    await rt.delete_service("default", svc_name)
    await rt.delete_service("default", svc_name)
    await rt.delete_worker("default", name)
    assert await rt.list_workers(owner) == []


async def test_secret_source_and_errors(cluster: Any) -> None:
    def create_secret() -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "mysecret",
                "annotations": {"s3-endpoint": "minio:9000", "s3-usehttps": "0"},
            },
            "data": {"ACCESS_KEY_ID": "QUs=", "SECRET_ACCESS_KEY": "U0s="},
        }
        k8s.CoreV1Api(cluster.api_client).create_namespaced_secret(
            "default", body, _preload_content=False
        )

    await asyncio.to_thread(create_secret)
    source = KubernetesSecretSource(cluster.api_client)
    secret = await source.get_s3_secret("default", "mysecret")
    assert (secret.endpoint_url, secret.access_key_id) == ("http://minio:9000", "AK")
    with pytest.raises(WorkloadError, match="secret default/nope not found"):
        await source.get_s3_secret("default", "nope")

    rt = KubernetesWorkloadRuntime(cluster.api_client, request_timeout_s=10)
    ji = load_example("helmet-detection-joint-inference-s3.yaml", "JointInferenceService")
    built = build_worker(
        owner_of(ji),
        "edge",
        ji.spec["edgeWorker"]["template"],
        mode=rt.mode,
        name="Bad_Name",
        settings=WorkerEnvSettings(),
    )
    with pytest.raises(WorkloadError, match=r"creating pod default/Bad_Name: 422"):
        await rt.ensure_worker("Bad_Name", built.spec)
    no_uid = built.spec.model_copy(
        update={"owner": built.spec.owner.model_copy(update={"uid": ""})}
    )
    with pytest.raises(WorkloadError, match="the owner's uid is required"):
        await rt.ensure_worker("ok", no_uid)


async def test_unreachable_api_server_is_a_clear_error(cluster: Any) -> None:
    config = k8s.Configuration()
    config.host = "http://127.0.0.1:9"  # discard port: nothing listens
    config.retries = 0
    rt = KubernetesWorkloadRuntime(k8s.ApiClient(config), request_timeout_s=5)
    ji = load_example("helmet-detection-joint-inference-s3.yaml", "JointInferenceService")
    with pytest.raises(WorkloadError, match=r"listing pods .*127.0.0.1:9 is unreachable"):
        await rt.list_workers(owner_of(ji))
