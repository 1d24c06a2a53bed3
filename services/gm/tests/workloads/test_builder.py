"""Builder and storage: upstream names, labels, env contract, storage and S3 rules."""

from __future__ import annotations

import pytest

from sedna.resources.worker import RestartPolicy
from sedna_gm.workloads import (
    RuntimeMode,
    S3Secret,
    StoragePlan,
    WorkerEnvSettings,
    WorkloadError,
    build_worker,
    deployment_name,
    owner_of,
    service_name,
    worker_name,
)

from .conftest import load_example

SETTINGS = WorkerEnvSettings(lc_server="http://localhost:9100", kb_server="http://kb:9020")
SECRET = S3Secret(
    name="mysecret",
    endpoint="play.min.io",
    use_https=True,
    access_key_id="AK",
    secret_access_key="SK",
)


def _ji() -> tuple[object, dict, dict]:
    obj = load_example("helmet-detection-joint-inference-s3.yaml", "JointInferenceService")
    return obj, obj.spec["edgeWorker"]["template"], obj.spec["cloudWorker"]["template"]


def test_names_follow_upstream() -> None:
    name = worker_name("surface-defect-detection", "Train", "0")
    assert name.startswith("surface-defect-detection-train-")
    assert len(name.rsplit("-", 1)[1]) == 5
    assert name == worker_name("surface-defect-detection", "train", "0")  # stable
    assert name != worker_name("surface-defect-detection", "train", "1")
    assert deployment_name("ji", "Cloud") == "ji-deployment-cloud"
    assert service_name("Helmet", "Cloud") == "helmet-cloud"


def test_joint_inference_edge_worker_kubernetes() -> None:
    obj, edge_tpl, _ = _ji()
    owner = owner_of(obj)
    storage = StoragePlan(RuntimeMode.KUBERNETES)
    storage.add("MODEL_URL", "s3://kubeedge/model/little-model/yolov3_resnet18.pb")
    built = build_worker(
        owner,
        "Edge",
        edge_tpl,
        mode=RuntimeMode.KUBERNETES,
        name=deployment_name(obj.name, "edge"),
        settings=SETTINGS,
        feature_env={"BIG_MODEL_IP": f"{obj.name}-cloud.default", "BIG_MODEL_PORT": "5000"},
        storage=storage,
        s3=SECRET,
        template_path="spec.edgeWorker.template",
    )
    spec = built.spec
    assert spec.labels == {
        "jointinferenceservice.sedna.io/name": obj.name,
        "jointinferenceservice.sedna.io/uid": obj.uid,
        "jointinferenceservice.sedna.io/worker-type": "edge",
    }
    env = spec.env_dict()
    assert env["NAMESPACE"] == "default"
    assert env["SERVICE_NAME"] == obj.name
    assert "JOB_NAME" not in env
    assert env["WORKER_NAME"] == built.name
    assert env["LC_SERVER"] == "http://localhost:9100"
    assert "KB_SERVER" not in env
    assert env["MODEL_URL"] == "s3://kubeedge/model/little-model/yolov3_resnet18.pb"
    assert env["S3_ENDPOINT_URL"] == "https://play.min.io"
    assert env["input_shape"] == "416,736"  # the template's own env is kept
    assert "ACCESS_KEY_ID" not in env
    assert built.credentials == {}
    assert spec.node_name == "edge-node"
    assert spec.image.endswith("little:v0.3.0")
    container_env = spec.template["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"] for e in container_env if "valueFrom" in e}
    assert refs == {
        "ACCESS_KEY_ID": {"secretKeyRef": {"name": "mysecret", "key": "ACCESS_KEY_ID"}},
        "SECRET_ACCESS_KEY": {"secretKeyRef": {"name": "mysecret", "key": "SECRET_ACCESS_KEY"}},
    }
    # The resource's template itself is untouched.
    assert all("valueFrom" not in e for e in edge_tpl["spec"]["containers"][0]["env"])


def test_template_env_wins_and_order() -> None:
    obj, _, cloud_tpl = _ji()
    cloud_tpl["spec"]["containers"][0]["env"].append({"name": "NAMESPACE", "value": "mine"})
    built = build_worker(
        owner_of(obj),
        "cloud",
        cloud_tpl,
        mode=RuntimeMode.KUBERNETES,
        name="x",
        settings=SETTINGS,
        feature_env={"BIG_MODEL_BIND_PORT": "5000", "input_shape": "ignored"},
    )
    env = built.spec.env_dict()
    assert env["NAMESPACE"] == "mine"
    assert env["input_shape"] == "544,544"
    assert env["BIG_MODEL_BIND_PORT"] == "5000"
    assert [v.name for v in built.spec.env].count("NAMESPACE") == 1


def test_federated_learning_workers_and_host_paths() -> None:
    obj = load_example("surface-defect-detection-federated-learning.yaml", "FederatedLearningJob")
    owner = owner_of(obj)
    tpl = obj.spec["trainingWorkers"][0]["template"]
    storage = StoragePlan(RuntimeMode.KUBERNETES)
    storage.add("TRAIN_DATASET_URL", "/data/1.txt")
    storage.add("MODEL_URL", "/model", is_dir=True, writable=True)
    name = worker_name(obj.name, "train", "0")
    built = build_worker(
        owner,
        "train",
        tpl,
        mode=RuntimeMode.KUBERNETES,
        name=name,
        settings=SETTINGS,
        feature_env={"AGG_IP": f"{obj.name}-aggregation.default", "AGG_PORT": "7363"},
        storage=storage,
        host_network=True,
    )
    env = built.spec.env_dict()
    assert env["JOB_NAME"] == obj.name
    assert "SERVICE_NAME" not in env
    assert env["TRAIN_DATASET_URL"] == "/home/data/data/1.txt"
    assert env["MODEL_URL"] == "/home/data/model"
    assert env["DATA_PATH_PREFIX"] == "/home/data"
    assert built.spec.labels["federatedlearningjob.sedna.io/worker-type"] == "train"
    assert built.spec.restart_policy is RestartPolicy.ON_FAILURE
    pod = built.spec.template["spec"]
    assert pod["hostNetwork"] is True
    paths = {v["hostPath"]["path"]: v["hostPath"]["type"] for v in pod["volumes"]}
    assert paths == {"/data": "Directory", "/model": "DirectoryOrCreate"}
    mounts = {
        m["mountPath"]: m.get("readOnly", False) for m in pod["containers"][0]["volumeMounts"]
    }
    assert mounts == {"/home/data/data": True, "/home/data/model": False}


def test_local_mode_paths_credentials_and_command() -> None:
    obj = load_example("surface-defect-detection-federated-learning.yaml", "FederatedLearningJob")
    tpl = obj.spec["aggregationWorker"]["template"]
    with pytest.raises(
        WorkloadError, match=r"spec.aggregationWorker.template.spec.containers\[0\].command"
    ):
        build_worker(
            owner_of(obj),
            "aggregation",
            tpl,
            mode=RuntimeMode.LOCAL,
            name="agg",
            settings=SETTINGS,
            template_path="spec.aggregationWorker.template",
        )
    tpl["spec"]["containers"][0]["command"] = ["python3", "aggregate.py"]
    tpl["spec"]["containers"][0]["workingDir"] = "/opt/fl"
    storage = StoragePlan(RuntimeMode.LOCAL)
    storage.add("MODEL_URL", ["/model/a", "s3://b/c"])
    built = build_worker(
        owner_of(obj),
        "aggregation",
        tpl,
        mode=RuntimeMode.LOCAL,
        name="agg",
        settings=SETTINGS,
        storage=storage,
        s3=SECRET,
    )
    env = built.spec.env_dict()
    assert env["MODEL_URL"] == "/model/a;s3://b/c"
    assert "DATA_PATH_PREFIX" not in env
    assert built.credentials == {"ACCESS_KEY_ID": "AK", "SECRET_ACCESS_KEY": "SK"}
    assert "ACCESS_KEY_ID" not in env
    assert built.spec.command == ["python3", "aggregate.py"]
    assert built.spec.working_dir == "/opt/fl"
    assert "volumes" not in built.spec.template["spec"]


def test_local_mode_rejects_value_from() -> None:
    obj, edge_tpl, _ = _ji()
    edge_tpl["spec"]["containers"][0]["command"] = ["run"]
    edge_tpl["spec"]["containers"][0]["env"].append(
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    )
    with pytest.raises(WorkloadError, match=r"env\[5\] \(POD_IP\): valueFrom"):
        build_worker(
            owner_of(obj), "edge", edge_tpl, mode=RuntimeMode.LOCAL, name="e", settings=SETTINGS
        )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ({}, r"tpl.spec: a pod spec is required"),
        ({"spec": {"containers": []}}, r"tpl.spec.containers: at least one"),
        ({"spec": {"containers": [{"args": "x"}]}}, r"containers\[0\].args: must be a list"),
        (
            {"spec": {"restartPolicy": "Sometimes", "containers": [{}]}},
            r"restartPolicy: 'Sometimes' is not one of",
        ),
    ],
)
def test_bad_templates_name_the_field(template: dict, message: str) -> None:
    obj, _, _ = _ji()
    with pytest.raises(WorkloadError, match=message):
        build_worker(
            owner_of(obj),
            "edge",
            template,
            mode=RuntimeMode.KUBERNETES,
            name="e",
            settings=SETTINGS,
            template_path="tpl",
        )


def test_storage_errors_and_secret_manifest() -> None:
    plan = StoragePlan(RuntimeMode.KUBERNETES)
    with pytest.raises(WorkloadError, match="MODEL_URL: host path 'rel/x' must be absolute"):
        plan.add("MODEL_URL", "rel/x")
    with pytest.raises(WorkloadError, match="unsupported scheme 'ftp'"):
        plan.add("MODEL_URL", "ftp://h/x")
    secret = S3Secret.from_manifest(
        {
            "metadata": {
                "name": "s",
                "annotations": {"s3-endpoint": "minio:9000", "s3-usehttps": "0"},
            },
            "data": {"ACCESS_KEY_ID": "QUs=", "SECRET_ACCESS_KEY": "U0s="},
        }
    )
    assert secret.endpoint_url == "http://minio:9000"
    assert (secret.access_key_id, secret.secret_access_key) == ("AK", "SK")
    assert "SK" not in repr(secret)
    with pytest.raises(WorkloadError, match="annotation 's3-endpoint' is required"):
        S3Secret.from_manifest({"metadata": {"name": "s"}})
