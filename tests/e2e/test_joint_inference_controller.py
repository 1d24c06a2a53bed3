"""The JointInferenceService controller end to end, in both runtimes.

Local runtime: the GM and two LCs ("cloud" and "edge-1") as the services assemble them, on
loopback. The workers are tiny Python processes: the cloud one serves a line on
``BIG_MODEL_BIND_IP:BIG_MODEL_BIND_PORT``; the edge one asks it for that line at
``BIG_MODEL_IP:BIG_MODEL_PORT`` and reports counters to ``LC_SERVER`` the way the SDK does. So
the env contract, the big-model port, the report path into ``status.metrics``, a roll on a
spec edit, a failure and its recovery, and the cleanup on delete are all seen by real
processes.

Kubernetes runtime: the GM with ``--store-url kubernetes:// --runtime kubernetes`` against
the API emulator; upstream's helmet-detection YAML, unchanged, becomes two Deployments and the
``<name>-cloud`` Service with the env contract; the status follows the Deployments; an edit
rolls the edge Deployment; deleting the service removes them.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from kubernetes import client as k8s
from support import k8s_emulator
from support.embedded import embedded_stack

from sedna.api.gm.v1 import resource_service_pb2 as pb
from sedna.api.gm.v1 import resource_service_pb2_grpc as pb_grpc
from sedna.runtime import ServiceServer
from sedna_lc.app import LocalController
from sedna_lc.settings import LCSettings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
CRDS = sorted((REPO / "crds").glob("sedna.io_*.yaml"))
HELMET = REPO / "tests" / "fixtures" / "upstream_examples" / "helmet-detection-joint-inference.yaml"
KIND = "JointInferenceService"

CLOUD_SCRIPT = """
import os, socket
server = socket.create_server((os.environ["BIG_MODEL_BIND_IP"],
                               int(os.environ["BIG_MODEL_BIND_PORT"])))
while True:
    conn, _ = server.accept()
    with conn:
        conn.sendall(("big model " + os.environ["BIG_MODEL_NAME"] + "\\n").encode())
"""

EDGE_SCRIPT = """
import json, os, socket, time, urllib.request
env = os.environ
threshold = float(json.loads(env["HEM_PARAMETERS"])[0]["value"])
for _ in range(600):
    try:
        with socket.create_connection((env["BIG_MODEL_IP"], int(env["BIG_MODEL_PORT"])), 2) as s:
            reply = s.makefile().readline().strip()
        break
    except OSError:
        time.sleep(0.1)
body = {
    "name": env["WORKER_NAME"], "namespace": env["NAMESPACE"], "ownerName": env["SERVICE_NAME"],
    "ownerKind": "jointinferenceservice", "kind": "inference", "results": [],
    "ownerInfo": {"inferenceNumber": 5, "hardExampleNumber": 2, "uploadCloudRatio": 0.4,
                  "cloudReplies": int(reply == "big model " + env["BIG_MODEL_NAME"]),
                  "hemThreshold": threshold, "startTime": "now", "updateTime": "now"},
}
request = urllib.request.Request(
    env["LC_SERVER"] + "/sedna/workers/" + env["WORKER_NAME"] + "/info",
    data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
urllib.request.urlopen(request, timeout=10).read()
while True:
    time.sleep(1)
"""


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.1)


@asynccontextmanager
async def extra_lc(tmp_path: Path, gm_address: str, node: str) -> AsyncIterator[LocalController]:
    """One more LocalController for ``node``, connected to the GM at ``gm_address``."""
    settings = LCSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        drain_seconds=1,
        log_format="console",
        node_name=node,
        gm_address=gm_address,
        http_port=0,
        data_dir=tmp_path / f"lc-{node}",
    )
    server = ServiceServer(settings)
    lc = LocalController(settings, server.registry)
    await lc.restore()
    await server.start()
    await lc.connect(f"127.0.0.1:{server.port}")
    try:
        yield lc
    finally:
        await lc.stop()
        await server.stop(0)


class Api:
    """The GM's resource API, as the CLI uses it."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = pb_grpc.ResourceServiceStub(channel)

    async def apply(self, manifest: dict[str, Any]) -> None:
        await self.stub.Apply(pb.ApplyRequest(manifest_json=json.dumps(manifest).encode()))

    async def status(self, name: str, kind: str = KIND) -> dict[str, Any]:
        reply = await self.stub.Get(pb.GetRequest(kind=kind, name=name))
        data = json.loads(reply.resource.status_json or b"{}")
        assert isinstance(data, dict)
        return data

    async def delete(self, name: str, kind: str = KIND) -> None:
        await self.stub.Delete(pb.DeleteRequest(kind=kind, name=name))

    async def gone(self, name: str, kind: str = KIND) -> bool:
        try:
            await self.stub.Get(pb.GetRequest(kind=kind, name=name))
        except grpc.aio.AioRpcError as exc:
            return exc.code() is grpc.StatusCode.NOT_FOUND
        return False


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def metrics(status: dict[str, Any]) -> dict[str, str]:
    return {m["key"]: m["value"] for m in status.get("metrics") or []}


# --- local runtime ---------------------------------------------------------------------------


def _model(name: str, url: str) -> dict[str, Any]:
    return {
        "apiVersion": "sedna.io/v1alpha1",
        "kind": "Model",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"url": url, "format": "onnx"},
    }


def _local_service(
    threshold: str = "0.9", cloud_script: str = CLOUD_SCRIPT, cloud_policy: str = ""
) -> dict[str, Any]:
    cloud_spec: dict[str, Any] = {
        "nodeName": "cloud",
        "containers": [
            {"name": "big", "image": "big:v1", "command": [sys.executable, "-c", cloud_script]}
        ],
    }
    if cloud_policy:
        cloud_spec["restartPolicy"] = cloud_policy
    return {
        "apiVersion": "sedna.io/v1alpha1",
        "kind": KIND,
        "metadata": {"name": "helmet", "namespace": "default"},
        "spec": {
            "edgeWorker": {
                "model": {"name": "little"},
                "hardExampleMining": {
                    "name": "IBT",
                    "parameters": [{"key": "threshold_img", "value": threshold}],
                },
                "template": {
                    "spec": {
                        "nodeName": "edge-1",
                        "containers": [
                            {
                                "name": "little",
                                "image": "little:v1",
                                "command": [sys.executable, "-c", EDGE_SCRIPT],
                            }
                        ],
                    }
                },
            },
            "cloudWorker": {"model": {"name": "big"}, "template": {"spec": cloud_spec}},
        },
    }


async def test_local_runtime_serves_reports_rolls_and_cleans_up(tmp_path: Path) -> None:
    stack = embedded_stack(tmp_path, node="edge-1", workload_poll_seconds=0.2)
    async with stack as running, extra_lc(tmp_path, running.gm_address, "cloud") as cloud_lc:
        edge_lc = running.lc
        async with grpc.aio.insecure_channel(running.gm_address) as channel:
            api = Api(channel)
            await api.apply(_model("big", str(tmp_path / "big.onnx")))
            await api.apply(_model("little", str(tmp_path / "little.onnx")))
            await api.apply(_local_service())

            async def reported() -> bool:
                status = await api.status("helmet")
                return status.get("phase") == "Running" and "hemThreshold" in metrics(status)

            await eventually(reported, 60, "both workers running and the edge report in")
            status = await api.status("helmet")
            # The edge worker reached the big model through BIG_MODEL_IP/BIG_MODEL_PORT.
            assert metrics(status) == {
                "cloudReplies": "1",
                "hardExampleNumber": "2",
                "hemThreshold": "0.9",
                "inferenceNumber": "5",
                "uploadCloudRatio": "0.4",
            }
            assert (status["active"], status["failed"]) == (2, 0)
            assert condition(status, "Ready")["reason"] == "Running"
            assert [w.name for w in cloud_lc.workers.list_workers()] == ["helmet-deployment-cloud"]
            assert [w.name for w in edge_lc.workers.list_workers()] == ["helmet-deployment-edge"]
            worker = await running.gm.store.get("Worker", "default", "helmet-deployment-cloud")
            env = {e["name"]: e["value"] for e in worker.spec["env"]}
            assert env["BIG_MODEL_BIND_PORT"] != "5000"  # a port of its own on the shared host

            # Edit the HEM threshold: the edge worker is replaced and reports the new value.
            await api.apply(_local_service("0.5"))

            async def rolled() -> bool:
                status = await api.status("helmet")
                return (
                    metrics(status).get("hemThreshold") == "0.5"
                    and status.get("observedGeneration") == 2
                    and status.get("phase") == "Running"
                )

            await eventually(rolled, 60, "the edge worker rolled with the new threshold")

            await api.delete("helmet")

            async def cleaned() -> bool:
                return (
                    await api.gone("helmet")
                    and not cloud_lc.workers.list_workers()
                    and not edge_lc.workers.list_workers()
                )

            await eventually(cleaned, 60, "the service and both workers gone")


async def test_local_runtime_failure_is_reported_and_recovers(tmp_path: Path) -> None:
    stack = embedded_stack(tmp_path, node="edge-1", workload_poll_seconds=0.2)
    async with (
        stack as running,
        extra_lc(tmp_path, running.gm_address, "cloud"),
        grpc.aio.insecure_channel(running.gm_address) as channel,
    ):
        api = Api(channel)
        await api.apply(_model("big", str(tmp_path / "big.onnx")))
        await api.apply(_model("little", str(tmp_path / "little.onnx")))
        broken = "import sys; sys.exit(3)"
        await api.apply(_local_service(cloud_script=broken, cloud_policy="Never"))

        async def failed() -> bool:
            return (await api.status("helmet")).get("phase") == "Failed"

        await eventually(failed, 60, "phase Failed")
        ready = condition(await api.status("helmet"), "Ready")
        assert ready["reason"] == "WorkerFailed"
        assert "cloud worker helmet-deployment-cloud: exited with code 3" in ready["message"]

        # Fixing the template rolls the cloud worker; the service runs again.
        await api.apply(_local_service())

        async def running_again() -> bool:
            status = await api.status("helmet")
            return status.get("phase") == "Running" and status.get("observedGeneration") == 2

        await eventually(running_again, 60, "phase Running after the fix")


# --- Kubernetes runtime ----------------------------------------------------------------------
# The helpers below are shared with test_joint_inference_kubernetes_example.py (the example's
# YAML), which loads this module by path.


@asynccontextmanager
async def kubernetes_stack(tmp_path: Path) -> AsyncIterator[tuple[Any, Api, Any]]:
    """The API emulator (CRDs, Deployments, Services) and a GM in Kubernetes mode against it
    (``--store-url kubernetes:// --runtime kubernetes``) with an LC on node ``edge-1``;
    yields the emulated cluster, the GM's resource API and the running GM/LC pair."""
    async with k8s_emulator.emulated_api_server(
        crds=CRDS, builtin_resources=True, namespaces=("default",)
    ) as cluster:
        config = k8s_emulator.write_kubeconfig(tmp_path / "kubeconfig", cluster.host)
        stack = embedded_stack(
            tmp_path,
            store_url=f"kubernetes://{config}",
            runtime="kubernetes",
            kubeconfig=config,
            hub_state_url=f"sqlite:///{tmp_path / 'hub.db'}",
            heartbeat_seconds=0.5,
            workload_poll_seconds=0.2,
        )
        async with stack as running, grpc.aio.insecure_channel(running.gm_address) as channel:
            yield cluster, Api(channel), running


@asynccontextmanager
async def kubernetes_gm(tmp_path: Path) -> AsyncIterator[tuple[Any, Api]]:
    """:func:`kubernetes_stack` without the running pair."""
    async with kubernetes_stack(tmp_path) as (cluster, api, _running):
        yield cluster, api


async def read_object(cluster: Any, kind: str, name: str) -> dict[str, Any] | None:
    """A Deployment or Service in ``default`` as the API server has it (None: not found)."""
    core, apps = k8s.CoreV1Api(cluster.api_client), k8s.AppsV1Api(cluster.api_client)
    read = {
        "deployment": apps.read_namespaced_deployment,
        "service": core.read_namespaced_service,
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


async def make_available(cluster: Any, name: str) -> None:
    """What the Deployment controller would write once a replica is available."""
    body = {"status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}}

    def run() -> None:
        k8s.AppsV1Api(cluster.api_client).patch_namespaced_deployment_status(
            name, "default", body, _preload_content=False
        )

    await asyncio.to_thread(run)


def container_env(deployment: dict[str, Any]) -> dict[str, str]:
    """The first container's env as name -> value ("" for a ``valueFrom``)."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def _template_container(service: dict[str, Any], key: str) -> dict[str, Any]:
    container: dict[str, Any] = service["spec"][key]["template"]["spec"]["containers"][0]
    return container


def _own_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container.get("env") or [] if "value" in e}


def _pod_path(url: str) -> str:
    """Where a Model URL is inside the pod: host paths under /home/data (as upstream)."""
    return url if "://" in url else "/home/data" + url


async def deployed_with_the_env_contract(
    cluster: Any, docs: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Wait for both Deployments and the cloud Service of the YAML ``docs``; check them against
    what the YAML says (the upstream env contract); return (cloud, edge, Service)."""
    service = next(d for d in docs if d["kind"] == KIND)
    models = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Model"}
    name, ns = service["metadata"]["name"], service["metadata"]["namespace"]
    cloud, edge = f"{name}-deployment-cloud", f"{name}-deployment-edge"

    async def deployed() -> bool:
        return all(
            [
                await read_object(cluster, "deployment", cloud),
                await read_object(cluster, "deployment", edge),
                await read_object(cluster, "service", f"{name}-cloud"),
            ]
        )

    await eventually(deployed, 30, "both Deployments and the cloud Service")
    cloud_dep = await read_object(cluster, "deployment", cloud)
    edge_dep = await read_object(cluster, "deployment", edge)
    svc = await read_object(cluster, "service", f"{name}-cloud")
    assert cloud_dep is not None
    assert edge_dep is not None
    assert svc is not None
    cloud_own = _own_env(_template_container(service, "cloudWorker"))
    edge_own = _own_env(_template_container(service, "edgeWorker"))
    port = int(cloud_own.get("BIG_MODEL_BIND_PORT", "5000"))
    mining = service["spec"]["edgeWorker"]["hardExampleMining"]
    expected = {
        "cloud": {
            "BIG_MODEL_BIND_IP": "0.0.0.0",
            "BIG_MODEL_BIND_PORT": str(port),
            "BIG_MODEL_NAME": name,
        },
        "edge": {
            "BIG_MODEL_IP": f"{name}-cloud.{ns}",
            "BIG_MODEL_PORT": str(port),
            "BIG_MODEL_NAME": name,
            "HEM_NAME": mining["name"],
            "HEM_PARAMETERS": json.dumps(mining.get("parameters") or [], separators=(",", ":")),
        },
    }
    for role, dep, own in (("cloud", cloud_dep, cloud_own), ("edge", edge_dep, edge_own)):
        model = models[service["spec"][f"{role}Worker"]["model"]["name"]]
        want = {
            **expected[role],
            "MODEL_URL": _pod_path(model["url"]),
            "MODEL_FORMAT": model["format"],
            "NAMESPACE": ns,
            "SERVICE_NAME": name,
            "WORKER_NAME": f"{name}-deployment-{role}",
            "LC_SERVER": "http://localhost:9100",  # the GM's --lc-server default
            **own,  # the template's own entries win, and stay
        }
        env = container_env(dep)
        assert {k: env.get(k) for k in want} == want, role
        [ref] = dep["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["controller"]) == (KIND, name, True)
        pod = dep["spec"]["template"]["spec"]
        template = service["spec"][f"{role}Worker"]["template"]["spec"]
        assert pod["nodeName"] == template["nodeName"]
        container = _template_container(service, f"{role}Worker")
        for field in ("image", "command", "args", "workingDir", "resources"):
            assert pod["containers"][0].get(field) == container.get(field), (role, field)
    edge_pod = edge_dep["spec"]["template"]["spec"]
    assert edge_pod["hostNetwork"] is True
    edge_template = service["spec"]["edgeWorker"]["template"]["spec"]
    assert edge_pod["dnsPolicy"] == edge_template.get("dnsPolicy", "ClusterFirstWithHostNet")
    assert svc["spec"]["ports"][0]["port"] == port
    assert svc["spec"]["selector"] == {
        "jointinferenceservice.sedna.io/name": name,
        "jointinferenceservice.sedna.io/worker-type": "cloud",
    }
    return cloud_dep, edge_dep, svc


async def test_kubernetes_runtime_deploys_the_upstream_yaml(tmp_path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(HELMET.read_text()) if d]
    async with kubernetes_gm(tmp_path) as (cluster, api):
        for doc in docs:
            await api.apply(doc)
        service = next(d for d in docs if d["kind"] == KIND)
        name = service["metadata"]["name"]
        cloud_dep, edge_dep, _ = await deployed_with_the_env_contract(cluster, docs)
        # The same contract, spelled out for upstream's YAML.
        cloud_env, edge_env = container_env(cloud_dep), container_env(edge_dep)
        assert cloud_env["BIG_MODEL_BIND_PORT"] == "5000"
        assert cloud_env["MODEL_URL"] == "/home/data/data/big-model/yolov3_darknet.pb"
        assert cloud_env["MODEL_FORMAT"] == "pb"
        assert cloud_env["input_shape"] == "544,544"  # the template's own env stays
        assert edge_env["BIG_MODEL_IP"] == f"{name}-cloud.default"
        assert edge_env["HEM_NAME"] == "IBT"
        assert json.loads(edge_env["HEM_PARAMETERS"]) == [
            {"key": "threshold_img", "value": "0.9"},
            {"key": "threshold_box", "value": "0.9"},
        ]
        assert edge_dep["spec"]["template"]["spec"]["nodeName"] == "edge-node-name"
        await status_follows_the_deployments(cluster, api, name)
        await _edit_rolls_the_edge_deployment(cluster, api, service, cloud_dep)
        await delete_removes_everything(cluster, api, name)


async def status_follows_the_deployments(cluster: Any, api: Api, name: str) -> None:
    """Pending until the cloud, then the edge Deployment is available; then Running."""

    async def phase(expected: str, reason: str) -> bool:
        status = await api.status(name)
        return (
            status.get("phase") == expected and condition(status, "Ready").get("reason") == reason
        )

    await eventually(lambda: phase("Pending", "CloudNotReady"), 30, "Pending")
    await make_available(cluster, f"{name}-deployment-cloud")
    await eventually(lambda: phase("Pending", "EdgeNotReady"), 30, "the cloud ready")
    await make_available(cluster, f"{name}-deployment-edge")
    await eventually(lambda: phase("Running", "Running"), 30, "Running")
    status = await api.status(name)
    assert (status["active"], status["failed"]) == (2, 0)


async def _edit_rolls_the_edge_deployment(
    cluster: Any, api: Api, service: dict[str, Any], cloud_before: dict[str, Any]
) -> None:
    name = service["metadata"]["name"]
    edited = copy.deepcopy(service)
    container = edited["spec"]["edgeWorker"]["template"]["spec"]["containers"][0]
    container["env"][0]["value"] = "320,320"
    await api.apply(edited)

    async def edge_rolled() -> bool:
        dep = await read_object(cluster, "deployment", f"{name}-deployment-edge")
        return dep is not None and container_env(dep)["input_shape"] == "320,320"

    await eventually(edge_rolled, 30, "the edge Deployment rolled")
    cloud_after = await read_object(cluster, "deployment", f"{name}-deployment-cloud")
    assert cloud_after is not None  # the cloud Deployment's spec did not change
    assert cloud_after["metadata"]["annotations"] == cloud_before["metadata"]["annotations"]


async def delete_removes_everything(cluster: Any, api: Api, name: str) -> None:
    """Delete the service; its Deployments, its Service and the object itself go."""
    await api.delete(name)

    async def removed() -> bool:
        return (
            await api.gone(name)
            and await read_object(cluster, "deployment", f"{name}-deployment-cloud") is None
            and await read_object(cluster, "deployment", f"{name}-deployment-edge") is None
            and await read_object(cluster, "service", f"{name}-cloud") is None
        )

    await eventually(removed, 30, "Deployments, Service and the service gone")


async def read_hpa(cluster: Any, name: str) -> dict[str, Any] | None:
    """A HorizontalPodAutoscaler (autoscaling/v2) in ``default`` (None: not found)."""
    api = k8s.AutoscalingV2Api(cluster.api_client)

    def run() -> dict[str, Any] | None:
        try:
            raw = api.read_namespaced_horizontal_pod_autoscaler(
                name, "default", _preload_content=False
            )
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = json.loads(raw.data)
        assert isinstance(data, dict)
        return data

    return await asyncio.to_thread(run)


async def test_kubernetes_runtime_creates_updates_and_deletes_the_hpa(tmp_path: Path) -> None:
    """A worker's ``hpa`` becomes ``hpa-<deployment>``; the HPA owns the replica count."""
    docs = [d for d in yaml.safe_load_all(HELMET.read_text()) if d]
    service = next(d for d in docs if d["kind"] == KIND)
    name = service["metadata"]["name"]
    edge, hpa_name = f"{name}-deployment-edge", f"hpa-{name}-deployment-edge"
    scaled = copy.deepcopy(service)
    metrics = [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50},
            },
        }
    ]
    scaled["spec"]["edgeWorker"]["hpa"] = {"minReplicas": 2, "maxReplicas": 4, "metrics": metrics}
    async with kubernetes_gm(tmp_path) as (cluster, api):
        for doc in docs:
            await api.apply(scaled if doc["kind"] == KIND else doc)

        async def created() -> bool:
            return await read_hpa(cluster, hpa_name) is not None

        await eventually(created, 30, "the edge worker's HPA")
        hpa = await read_hpa(cluster, hpa_name)
        assert hpa is not None
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": edge,
        }
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
        assert hpa["spec"]["metrics"] == metrics
        [ref] = hpa["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["controller"]) == (KIND, name, True)
        assert hpa["metadata"]["labels"]["jointinferenceservice.sedna.io/worker-type"] == "edge"
        assert await read_hpa(cluster, f"hpa-{name}-deployment-cloud") is None
        dep = await read_object(cluster, "deployment", edge)
        assert dep is not None
        assert dep["spec"]["replicas"] == 2

        # The HPA controller scales the edge Deployment to 3 (the emulator runs none).
        def scale() -> None:
            k8s.AppsV1Api(cluster.api_client).patch_namespaced_deployment(
                edge, "default", {"spec": {"replicas": 3}}, _preload_content=False
            )

        await asyncio.to_thread(scale)

        # An hpa edit updates the HPA and leaves the count alone (polls come every 0.2 s).
        scaled["spec"]["edgeWorker"]["hpa"]["maxReplicas"] = 6
        await api.apply(scaled)

        async def updated() -> bool:
            hpa = await read_hpa(cluster, hpa_name)
            return hpa is not None and hpa["spec"]["maxReplicas"] == 6

        await eventually(updated, 30, "the HPA updated")
        await asyncio.sleep(0.5)  # a few more reconciles
        dep = await read_object(cluster, "deployment", edge)
        assert dep is not None
        assert dep["spec"]["replicas"] == 3

        # Removing the hpa deletes the HPA; the controller owns the count again.
        await api.apply(service)

        async def removed() -> bool:
            dep = await read_object(cluster, "deployment", edge)
            return await read_hpa(cluster, hpa_name) is None and (
                dep is not None and dep["spec"]["replicas"] == 1
            )

        await eventually(removed, 30, "the HPA deleted, one replica")

        # With the hpa back, deleting the service removes the HPA with the rest.
        await api.apply(scaled)
        await eventually(created, 30, "the HPA again")
        await delete_removes_everything(cluster, api, name)
        assert await read_hpa(cluster, hpa_name) is None
