"""Upstream's federated-learning YAML, unchanged, in Kubernetes mode (the API emulator).

``examples/upstream/surface-defect-detection-federated-learning.yaml`` is applied to a GM in
Kubernetes mode: the job becomes the aggregator Pod, the ``<name>-aggregation`` Service on
7363 and one train Pod per training worker on its Dataset's node, with upstream's env
contract; its status follows the Pods' phases; deleting it removes the Pods and the Service.
A trainer Pod's report to its node's LC reaches the job's status (round, sample counts).
The Kubernetes helpers are those of ``test_joint_inference_controller.py``, loaded by path.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.modules import load_module

from sedna.service.client import LCClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
YAML = REPO / "examples" / "upstream" / "surface-defect-detection-federated-learning.yaml"
EXAMPLE_YAML = REPO / "examples" / "federated_learning" / "federated-learning.yaml"
ji = load_module(
    "sedna_e2e_joint_inference_controller",
    Path(__file__).with_name("test_joint_inference_controller.py"),
)
KIND = "FederatedLearningJob"
NAME = "surface-defect-detection"


async def _pods(cluster: Any) -> list[dict[str, Any]]:
    def run() -> list[dict[str, Any]]:
        core = ji.k8s.CoreV1Api(cluster.api_client)
        data = json.loads(core.list_namespaced_pod("default", _preload_content=False).data)
        return list(data["items"])

    return await asyncio.to_thread(run)


async def _set_phase(cluster: Any, name: str, phase: str) -> None:
    def run() -> None:
        ji.k8s.CoreV1Api(cluster.api_client).patch_namespaced_pod_status(
            name, "default", {"status": {"phase": phase}}, _preload_content=False
        )

    await asyncio.to_thread(run)


def _env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0]["env"]}


def _type(pod: dict[str, Any]) -> str:
    return str(pod["metadata"]["labels"]["federatedlearningjob.sedna.io/worker-type"])


async def test_the_upstream_yaml_deploys_unchanged(tmp_path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(YAML.read_text()) if d]
    async with ji.kubernetes_gm(tmp_path) as (cluster, api):
        for doc in docs:
            await api.apply(doc)

        async def deployed() -> bool:
            return len(await _pods(cluster)) == 3

        await ji.eventually(deployed, 30, "the aggregator and two train Pods")
        pods = {(_type(p), p["spec"]["nodeName"]): p for p in await _pods(cluster)}
        assert set(pods) == {
            ("aggregation", "cloud-node-name"),
            ("train", "edge1-node-name"),
            ("train", "edge2-node-name"),
        }
        agg = _env(pods["aggregation", "cloud-node-name"])
        assert agg["AGG_BIND_PORT"] == "7363"
        assert agg["PARTICIPANTS_COUNT"] == "2"
        assert agg["MODEL_URL"] == "/home/data/model"
        assert agg["exit_round"] == "3"
        assert (agg["NAMESPACE"], agg["JOB_NAME"]) == ("default", NAME)
        for node, ds in (("edge1", "1"), ("edge2", "2")):
            pod = pods["train", f"{node}-node-name"]
            env = _env(pod)
            assert (env["AGG_IP"], env["AGG_PORT"]) == (f"{NAME}-aggregation.default", "7363")
            assert env["PARTICIPANTS_COUNT"] == "2"
            assert env["TRANSMITTER"] == "ws"
            assert env["MODEL_NAME"] == "surface-defect-detection-model"
            assert env["DATASET_NAME"] == f"{node}-surface-defect-detection-dataset"
            assert env["TRAIN_DATASET_URL"] == f"/home/data/data/{ds}.txt"
            assert env["WORKER_NAME"] == pod["metadata"]["name"]
            assert env["LC_SERVER"]
            assert pod["spec"]["hostNetwork"] is True
            assert pod["spec"]["restartPolicy"] == "OnFailure"
        service = await ji.read_object(cluster, "service", f"{NAME}-aggregation")
        assert service is not None
        # The gRPC port, and the bulk port trainers push and pull the weights on.
        assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
            ("tcp-0", 7363, 7363),
            ("bulk", 7365, 7365),
        ]

        for pod in pods.values():
            await _set_phase(cluster, pod["metadata"]["name"], "Running")

        async def phase(expected: str) -> bool:
            return (await api.status(NAME, KIND)).get("phase") == expected

        await ji.eventually(lambda: phase("Running"), 30, "Running")
        for pod in pods.values():
            await _set_phase(cluster, pod["metadata"]["name"], "Succeeded")
        await ji.eventually(lambda: phase("Succeeded"), 30, "Succeeded")
        status = await api.status(NAME, KIND)
        assert ji.condition(status, "Complete")["status"] == "True"
        assert (status["succeeded"], status["failed"], status["active"]) == (3, 0, 0)

        await api.delete(NAME, KIND)

        async def removed() -> bool:
            return (
                await api.gone(NAME, KIND)
                and not await _pods(cluster)
                and await ji.read_object(cluster, "service", f"{NAME}-aggregation") is None
            )

        await ji.eventually(removed, 30, "Pods, Service and the job gone")


async def test_the_examples_yaml_deploys_with_its_checkpoint_volume(tmp_path: Path) -> None:
    """``examples/federated_learning/federated-learning.yaml`` in Kubernetes mode: the
    aggregator Pod keeps its checkpoints in the Pod's emptyDir, which outlives a restarted
    container, so a crashed aggregator resumes the job there too."""
    docs = [d for d in yaml.safe_load_all(EXAMPLE_YAML.read_text()) if d]
    job = next(d for d in docs if d["kind"] == KIND)
    name = job["metadata"]["name"]
    async with ji.kubernetes_gm(tmp_path) as (cluster, api):
        for doc in docs:
            await api.apply(doc)

        async def deployed() -> bool:
            return len(await _pods(cluster)) == 4

        await ji.eventually(deployed, 30, "the aggregator and three train Pods")
        pods = await _pods(cluster)
        assert sorted(_type(p) for p in pods) == ["aggregation", "train", "train", "train"]
        agg = next(p for p in pods if _type(p) == "aggregation")
        checkpoints = _env(agg)["checkpoint_dir"]
        mounts = agg["spec"]["containers"][0]["volumeMounts"]
        assert {"name": "checkpoints", "mountPath": checkpoints} in mounts
        assert {"name": "checkpoints", "emptyDir": {}} in agg["spec"]["volumes"]
        assert agg["spec"]["restartPolicy"] == "OnFailure"
        await api.delete(name, KIND)
        await ji.eventually(
            lambda: _no_pods(cluster), 30, "the example's Pods gone after the job's delete"
        )


async def _no_pods(cluster: Any) -> bool:
    return not await _pods(cluster)


async def test_trainer_reports_reach_the_job_status_in_kubernetes_mode(tmp_path: Path) -> None:
    """A trainer Pod on the LC's node reports its round and samples to the node's LC (the
    upstream worker report API, as ``FederatedLearning.train`` does); the LC relays it to the
    GM, whose controller writes ``currentRound``, ``sampleCounts`` and the Training message
    into the custom resource's status in the API server."""
    text = YAML.read_text().replace("edge1-node-name", "edge-1")  # the embedded LC's node
    docs = [d for d in yaml.safe_load_all(text) if d]
    async with ji.kubernetes_stack(tmp_path) as (cluster, api, running):
        for doc in docs:
            await api.apply(doc)
        trainer = await _trainer_on(cluster, "edge-1")
        env = _env(trainer)

        async def training() -> bool:
            status = await api.status(NAME, KIND)
            return ji.condition(status, "Training").get("status") == "True"

        await ji.eventually(training, 30, "the Training condition (all Pods Running)")
        message = {  # what FederatedLearning.train sends after pulling round 2
            "name": env["WORKER_NAME"],
            "namespace": env["NAMESPACE"],
            "ownerName": env["JOB_NAME"],
            "ownerKind": "federatedlearningjob",
            "kind": "train",
            "status": "running",
            "ownerInfo": {"currentRound": 2, "sampleCount": 123},
        }
        lc_server = f"http://127.0.0.1:{running.lc.http.port}"
        answer = await asyncio.to_thread(LCClient.send, lc_server, env["WORKER_NAME"], message)
        assert answer == {"Status": 200, "Message": "OK"}

        async def reported() -> bool:
            status = await api.status(NAME, KIND)
            return status.get("currentRound") == 2 and bool(status.get("sampleCounts"))

        await ji.eventually(reported, 30, "the trainer's report in the job status")
        status = await api.status(NAME, KIND)
        assert status["sampleCounts"] == [
            {"nodeName": "edge-1", "workerName": env["WORKER_NAME"], "sampleCount": 123}
        ]
        assert "round 2" in ji.condition(status, "Training")["message"]


async def _trainer_on(cluster: Any, node: str) -> dict[str, Any]:
    """The train Pod on ``node``, once the job's three Pods exist; all set Running."""

    async def deployed() -> bool:
        return len(await _pods(cluster)) == 3

    await ji.eventually(deployed, 30, "the aggregator and two train Pods")
    pods = await _pods(cluster)
    for pod in pods:
        await _set_phase(cluster, pod["metadata"]["name"], "Running")
    return next(p for p in pods if _type(p) == "train" and p["spec"]["nodeName"] == node)
