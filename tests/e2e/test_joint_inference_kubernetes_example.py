"""The joint-inference example's YAML, unchanged, in Kubernetes mode (the API emulator).

``examples/joint_inference/joint-inference.yaml`` as ``prepare.py --out DIR`` writes it (the
same render, without training: the Kubernetes runtime never opens the model files) is applied
document by document to a GM running with ``--store-url kubernetes:// --runtime kubernetes``
against the API emulator. The Models and the Dataset are accepted (the Dataset is counted by
the LC of its node, ``edge-1``); the JointInferenceService becomes the cloud and edge
Deployments and the ``<name>-cloud`` Service with upstream's env contract plus
``MODEL_FORMAT``; its status follows the Deployments to Running; deleting everything removes
the Deployments, the Service and the objects.

The Kubernetes helpers are those of ``test_joint_inference_controller.py`` (upstream's helmet
YAML), loaded by path.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.modules import load_module

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "joint_inference"
ji = load_module(
    "sedna_e2e_joint_inference_controller",
    Path(__file__).with_name("test_joint_inference_controller.py"),
)
manifests = load_module("sedna_example_joint_inference_manifests", EXAMPLE / "manifests.py")

SAMPLES = 3


def prepared_manifest(out: Path) -> Path:
    """``DIR/joint-inference.yaml`` as ``prepare.py --out DIR`` renders it, and a small
    ``DIR/data/test.csv`` (the Dataset's file) in the example's format."""
    server = Path(sys.executable).parent / "sedna-inference"
    docs = manifests.render(
        out,
        python=sys.executable,
        inference_server=str(server if server.exists() else "sedna-inference"),
    )
    manifest = out / "joint-inference.yaml"
    out.mkdir(parents=True, exist_ok=True)
    manifest.write_text(manifests.dump(docs))
    dataset = out / "data" / "test.csv"
    dataset.parent.mkdir(parents=True)
    rows = [",".join(["label", *(f"p{i}" for i in range(64))])]
    rows += [",".join([str(n), *["0"] * 64]) for n in range(SAMPLES)]
    dataset.write_text("\n".join(rows) + "\n")
    return manifest


async def _accepted(api: Any, docs: list[dict[str, Any]]) -> None:
    """The Models are valid (Ready) and the Dataset's samples are counted on its node."""

    async def ready() -> bool:
        for doc in docs:
            kind, name = doc["kind"], doc["metadata"]["name"]
            if kind not in ("Model", "Dataset"):
                continue
            status = await api.status(name, kind)
            if status.get("phase") != "Ready":
                return False
            if kind == "Dataset" and status.get("numberOfSamples") != SAMPLES:
                return False
        return True

    await ji.eventually(ready, 30, "the Models Ready and the Dataset counted")
    for doc in docs:
        if doc["kind"] == "Model":
            status = await api.status(doc["metadata"]["name"], "Model")
            assert ji.condition(status, "Valid")["status"] == "True"


async def test_the_example_yaml_deploys_unchanged_in_kubernetes_mode(tmp_path: Path) -> None:
    out = tmp_path / "example"
    docs = [d for d in yaml.safe_load_all(prepared_manifest(out).read_text()) if d]
    assert [d["kind"] for d in docs] == ["Model", "Model", "Dataset", ji.KIND]
    name = manifests.service_name(docs)
    async with ji.kubernetes_gm(tmp_path) as (cluster, api):
        for doc in docs:
            await api.apply(doc)
        await _accepted(api, docs)

        # The contract as the YAML implies it (shared with upstream's helmet YAML) ...
        cloud_dep, edge_dep, _ = await ji.deployed_with_the_env_contract(cluster, docs)
        # ... and spelled out for this example.
        cloud_env, edge_env = ji.container_env(cloud_dep), ji.container_env(edge_dep)
        assert cloud_env["MODEL_URL"] == f"/home/data{out}/models/big.onnx"
        assert edge_env["MODEL_URL"] == f"/home/data{out}/models/little.onnx"
        assert cloud_env["MODEL_FORMAT"] == edge_env["MODEL_FORMAT"] == "onnx"
        assert cloud_env["BIG_MODEL_BIND_PORT"] == "5000"  # the template pins no port
        assert cloud_env["SERVICE_NAME"] == name == "digits-inference-example"
        assert cloud_env["WORKER_NAME"] == f"{name}-deployment-cloud"
        assert cloud_env["BACKEND_TYPE"] == "ONNX"
        assert edge_env["BIG_MODEL_IP"] == f"{name}-cloud.default"
        assert edge_env["BIG_MODEL_PORT"] == "5000"
        assert edge_env["HEM_NAME"] == "CrossEntropy"
        assert json.loads(edge_env["HEM_PARAMETERS"]) == [
            {"key": "threshold_cross_entropy", "value": "0.4"}
        ]
        assert edge_env["SERVICE_NAME"] == name
        assert edge_env["WORKER_NAME"] == f"{name}-deployment-edge"
        assert edge_env["LC_SERVER"] == "http://localhost:9100"
        assert edge_env["dataset_url"] == f"{out}/data/test.csv"  # the template's own, as is
        cloud_pod, edge_pod = (d["spec"]["template"]["spec"] for d in (cloud_dep, edge_dep))
        assert (cloud_pod["nodeName"], edge_pod["nodeName"]) == ("cloud", "edge-1")
        # The example sets no dnsPolicy: the host-network edge pod gets the one that still
        # resolves the cloud Service's name.
        assert edge_pod["dnsPolicy"] == "ClusterFirstWithHostNet"
        assert {v["hostPath"]["path"] for v in cloud_pod["volumes"]} == {f"{out}/models"}
        assert cloud_pod["containers"][0]["volumeMounts"][0]["mountPath"] == (
            f"/home/data{out}/models"
        )

        await ji.status_follows_the_deployments(cluster, api, name)
        status = await api.status(name)
        assert ji.condition(status, "ModelsReady")["status"] == "True"

        await ji.delete_removes_everything(cluster, api, name)
        for doc in docs[:3]:
            await api.delete(doc["metadata"]["name"], doc["kind"])
        for doc in docs[:3]:
            kind, item = doc["kind"], doc["metadata"]["name"]
            gone = functools.partial(api.gone, item, kind)
            await ji.eventually(gone, 30, f"{kind} {item} gone (finalizer released)")
