"""The joint-inference workers' environment contract, templates and big-model ports."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sedna.resources.objects import ObjectKey, ResourceObject
from sedna.resources.worker import RestartPolicy
from sedna_gm.controllers.jointinference.models import resolve_models, resolve_s3_secret
from sedna_gm.controllers.jointinference.workers import (
    ResolvedModel,
    build_cloud_worker,
    build_edge_worker,
    explicit_port,
    hem_parameters_json,
    hpa_of,
)
from sedna_gm.controllers.ports import WorkerPorts, allocate_port
from sedna_gm.workloads import (
    RuntimeMode,
    S3Secret,
    ServiceEndpoint,
    StaticSecretSource,
    WorkerEnvSettings,
    WorkloadError,
)

from .jointinference_support import env_of, model, service, template

SETTINGS = WorkerEnvSettings(lc_server="http://lc:9100", kb_server="http://kb:9020")
BIG = ResolvedModel("big", "/models/big.onnx", format="onnx")
LITTLE = ResolvedModel("little", "/models/little.onnx", format="onnx")
CLOUD_AT = ServiceEndpoint("ji-cloud.default", 5000)


def _stored(obj: ResourceObject) -> ResourceObject:
    obj.uid = f"uid-{obj.name}"
    obj.generation = 1
    return obj


def test_cloud_worker_env_contract_in_both_modes() -> None:
    obj = _stored(service())
    local = build_cloud_worker(obj, BIG, mode=RuntimeMode.LOCAL, settings=SETTINGS, port=25123)
    env = env_of(local.spec)
    assert env == {
        "NAMESPACE": "default",
        "SERVICE_NAME": "ji",
        "WORKER_NAME": "ji-deployment-cloud",
        "BIG_MODEL_BIND_IP": "0.0.0.0",
        "BIG_MODEL_BIND_PORT": "25123",
        "BIG_MODEL_NAME": "ji",
        "MODEL_URL": "/models/big.onnx",
        "MODEL_FORMAT": "onnx",
    }  # no LC_SERVER: the node's LC sets its own
    assert local.replicas == 1
    assert local.spec.worker_type == "cloud"
    assert local.spec.node_name == "cloud"
    assert local.spec.restart_policy is RestartPolicy.ALWAYS
    assert local.spec.labels == {
        "jointinferenceservice.sedna.io/name": "ji",
        "jointinferenceservice.sedna.io/uid": "uid-ji",
        "jointinferenceservice.sedna.io/worker-type": "cloud",
    }

    k8s = build_cloud_worker(obj, BIG, mode=RuntimeMode.KUBERNETES, settings=SETTINGS, port=5000)
    env = env_of(k8s.spec)
    assert env["LC_SERVER"] == "http://lc:9100"
    assert env["BIG_MODEL_BIND_PORT"] == "5000"
    # A host path is mounted into the pod under /home/data, as upstream does.
    assert env["MODEL_URL"] == "/home/data/models/big.onnx"
    assert env["DATA_PATH_PREFIX"] == "/home/data"
    pod = k8s.spec.template["spec"]
    assert pod["volumes"][0]["hostPath"] == {"path": "/models", "type": "Directory"}
    assert "hostNetwork" not in pod


def test_edge_worker_env_contract_and_host_network() -> None:
    obj = _stored(
        service(
            parameters=[
                {"key": "threshold_img", "value": "0.9"},
                {"key": "threshold_box", "value": "0.5"},
            ]
        )
    )
    local = build_edge_worker(
        obj,
        LITTLE,
        mode=RuntimeMode.LOCAL,
        settings=SETTINGS,
        cloud=ServiceEndpoint("10.0.0.7", 25123),
    )
    env = env_of(local.spec)
    assert env["HEM_NAME"] == "IBT"
    # Upstream's exact encoding: a compact JSON list of {key, value}.
    assert env["HEM_PARAMETERS"] == (
        '[{"key":"threshold_img","value":"0.9"},{"key":"threshold_box","value":"0.5"}]'
    )
    assert (env["BIG_MODEL_IP"], env["BIG_MODEL_PORT"]) == ("10.0.0.7", "25123")
    assert env["BIG_MODEL_NAME"] == "ji"
    assert env["MODEL_URL"] == "/models/little.onnx"
    assert env["MODEL_FORMAT"] == "onnx"
    assert env["WORKER_NAME"] == "ji-deployment-edge"
    assert "LC_SERVER" not in env
    assert local.spec.node_name == "edge-1"

    k8s = build_edge_worker(
        obj, LITTLE, mode=RuntimeMode.KUBERNETES, settings=SETTINGS, cloud=CLOUD_AT
    )
    env = env_of(k8s.spec)
    assert (env["BIG_MODEL_IP"], env["BIG_MODEL_PORT"]) == ("ji-cloud.default", "5000")
    assert env["LC_SERVER"] == "http://lc:9100"
    assert env["MODEL_FORMAT"] == "onnx"
    pod = k8s.spec.template["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"  # the cloud Service name resolves

    # A template's own dnsPolicy is kept.
    own = _stored(service(edge_template=template(None, node="e", dnsPolicy="Default")))
    kept = build_edge_worker(
        own, LITTLE, mode=RuntimeMode.KUBERNETES, settings=SETTINGS, cloud=CLOUD_AT
    )
    assert kept.spec.template["spec"]["dnsPolicy"] == "Default"


def test_template_env_wins_and_pins_the_port() -> None:
    pinned = [{"name": "BIG_MODEL_BIND_PORT", "value": "7000"}, {"name": "BIG_MODEL_IP"}]
    obj = _stored(service(cloud_template=template(["serve"], node="cloud", env=pinned)))
    assert explicit_port(obj) == 7000
    cloud = build_cloud_worker(obj, BIG, mode=RuntimeMode.LOCAL, settings=SETTINGS, port=7000)
    assert env_of(cloud.spec)["BIG_MODEL_BIND_PORT"] == "7000"
    edge_env = [{"name": "BIG_MODEL_IP", "value": "cloud.example"}]
    obj = _stored(service(edge_template=template(["infer"], node="edge-1", env=edge_env)))
    edge = build_edge_worker(obj, LITTLE, mode=RuntimeMode.LOCAL, settings=SETTINGS, cloud=CLOUD_AT)
    assert env_of(edge.spec)["BIG_MODEL_IP"] == "cloud.example"
    assert explicit_port(obj) is None

    bad = [{"name": "BIG_MODEL_BIND_PORT", "value": "http"}]
    obj = _stored(service(cloud_template=template(["serve"], env=bad)))
    with pytest.raises(WorkloadError, match=r"spec\.cloudWorker\.template.*'http' is not a port"):
        explicit_port(obj)


@pytest.mark.parametrize("mode", [RuntimeMode.LOCAL, RuntimeMode.KUBERNETES])
def test_model_format_is_injected_unless_absent_or_pinned(mode: RuntimeMode) -> None:
    obj = _stored(service())
    # A suffix-less URL: the format is what tells the inference server which backend to use.
    big = ResolvedModel("big", "s3://models/big", format="pt")
    cloud = build_cloud_worker(obj, big, mode=mode, settings=SETTINGS, port=5000)
    assert env_of(cloud.spec)["MODEL_FORMAT"] == "pt"
    bare = ResolvedModel("little", "/models/little.onnx")  # the Model sets no format
    edge = build_edge_worker(obj, bare, mode=mode, settings=SETTINGS, cloud=CLOUD_AT)
    assert "MODEL_FORMAT" not in env_of(edge.spec)

    pinned = [{"name": "MODEL_FORMAT", "value": "torchscript"}]
    obj = _stored(service(cloud_template=template(["serve"], node="cloud", env=pinned)))
    cloud = build_cloud_worker(obj, big, mode=mode, settings=SETTINGS, port=5000)
    assert env_of(cloud.spec)["MODEL_FORMAT"] == "torchscript"  # the template's entry wins


def test_local_templates_need_a_command_named_by_its_field() -> None:
    obj = _stored(service(edge_template=template(None, node="edge-1")))
    with pytest.raises(
        WorkloadError, match=r"spec\.edgeWorker\.template\.spec\.containers\[0\]\.command"
    ):
        build_edge_worker(obj, LITTLE, mode=RuntimeMode.LOCAL, settings=SETTINGS, cloud=CLOUD_AT)


def test_s3_models_get_credentials_the_way_each_runtime_wants() -> None:
    obj = _stored(service())
    secret = S3Secret(
        name="s3",
        endpoint="minio:9000",
        use_https=False,
        access_key_id="AK",
        secret_access_key="SK",
    )
    big = ResolvedModel("big", "s3://models/big.onnx", secret)
    local = build_cloud_worker(obj, big, mode=RuntimeMode.LOCAL, settings=SETTINGS, port=1)
    env = env_of(local.spec)
    assert env["MODEL_URL"] == "s3://models/big.onnx"
    assert env["S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "ACCESS_KEY_ID" not in env  # keys never go into the stored spec
    assert local.credentials == {"ACCESS_KEY_ID": "AK", "SECRET_ACCESS_KEY": "SK"}
    k8s = build_cloud_worker(obj, big, mode=RuntimeMode.KUBERNETES, settings=SETTINGS, port=1)
    refs = {e["name"]: e for e in k8s.spec.template["spec"]["containers"][0]["env"]}
    assert refs["ACCESS_KEY_ID"]["valueFrom"] == {
        "secretKeyRef": {"name": "s3", "key": "ACCESS_KEY_ID"}
    }
    assert k8s.credentials == {}


def test_hpa_min_replicas_and_empty_hem_parameters() -> None:
    obj = _stored(service(parameters=[]))
    obj.spec["cloudWorker"]["hpa"] = {"minReplicas": 2, "maxReplicas": 4}
    assert hem_parameters_json(obj) == "[]"
    cloud = build_cloud_worker(obj, BIG, mode=RuntimeMode.KUBERNETES, settings=SETTINGS, port=1)
    assert cloud.replicas == 2
    edge = build_edge_worker(
        obj, LITTLE, mode=RuntimeMode.KUBERNETES, settings=SETTINGS, cloud=CLOUD_AT
    )
    assert edge.replicas == 1
    assert json.loads(env_of(edge.spec)["HEM_PARAMETERS"]) == []


def test_hpa_becomes_the_autoscaler_on_kubernetes_only() -> None:
    obj = _stored(service())
    metrics = [{"type": "Resource", "resource": {"name": "cpu"}}]
    obj.spec["edgeWorker"]["hpa"] = {"maxReplicas": 3, "metrics": metrics, "behavior": None}
    assert hpa_of(obj, "edge") == {"maxReplicas": 3, "metrics": metrics}
    assert hpa_of(obj, "cloud") is None
    k8s = build_edge_worker(
        obj, LITTLE, mode=RuntimeMode.KUBERNETES, settings=SETTINGS, cloud=CLOUD_AT
    )
    assert (k8s.replicas, k8s.autoscaler) == (1, {"maxReplicas": 3, "metrics": metrics})
    cloud = build_cloud_worker(obj, BIG, mode=RuntimeMode.KUBERNETES, settings=SETTINGS, port=1)
    assert cloud.autoscaler is None
    # The hpa is in the hash: editing it rolls the worker (the runtime updates the HPA).
    edited = _stored(service())
    edited.spec["edgeWorker"]["hpa"] = {"maxReplicas": 4, "metrics": metrics}
    rolled = build_edge_worker(
        edited, LITTLE, mode=RuntimeMode.KUBERNETES, settings=SETTINGS, cloud=CLOUD_AT
    )
    assert rolled.spec_hash != k8s.spec_hash
    # Locally one process runs whatever the hpa says: no autoscaler, no roll on an hpa edit.
    local = build_edge_worker(
        obj, LITTLE, mode=RuntimeMode.LOCAL, settings=SETTINGS, cloud=CLOUD_AT
    )
    local_edited = build_edge_worker(
        edited, LITTLE, mode=RuntimeMode.LOCAL, settings=SETTINGS, cloud=CLOUD_AT
    )
    assert local.autoscaler is None
    assert local.spec_hash == local_edited.spec_hash


# --- ports ------------------------------------------------------------------------------------


def test_allocate_port_is_stable_and_skips_taken_and_bound_ports() -> None:
    first = allocate_port("default/ji", set(), port_range=(30000, 30010), probe=lambda _: True)
    assert 30000 <= first < 30010
    assert allocate_port("default/ji", set(), port_range=(30000, 30010), probe=lambda _: True) == (
        first
    )
    skipped = allocate_port(
        "default/ji", {first}, port_range=(30000, 30010), probe=lambda p: p != first + 1
    )
    assert skipped not in (first, first + 1)
    exhausted = r"no free port in 30000-30001 .*AGG_BIND_PORT in the aggregation"
    with pytest.raises(WorkloadError, match=exhausted):
        allocate_port(
            "default/fl",
            {30000},
            port_range=(30000, 30002),
            probe=lambda p: p != 30001,
            env_name="AGG_BIND_PORT",
            worker_type="aggregation",
        )


class _Workers:
    """The part of an Informer WorkerPorts reads."""

    def __init__(self, *objs: ResourceObject) -> None:
        self.objs = {o.key: o for o in objs}

    def get(self, key: ObjectKey) -> ResourceObject | None:
        return self.objs.get(key)

    def list(self) -> list[ResourceObject]:
        return list(self.objs.values())


def _cloud_worker(service_name: str, port: int) -> ResourceObject:
    return ResourceObject(
        kind="Worker",
        api_version="runtime.sedna.io/v1",
        name=f"{service_name}-deployment-cloud",
        labels={
            "jointinferenceservice.sedna.io/name": service_name,
            "jointinferenceservice.sedna.io/worker-type": "cloud",
        },
        spec={"env": [{"name": "BIG_MODEL_BIND_PORT", "value": str(port)}]},
    )


def test_ports_are_recovered_from_workers_and_never_shared() -> None:
    one, two = service("one"), service("two")
    workers: Any = _Workers(_cloud_worker("one", 30001))
    ports = WorkerPorts(
        workers,
        env_name="BIG_MODEL_BIND_PORT",
        worker_type="cloud",
        worker_name=lambda name: f"{name}-deployment-cloud",
        port_range=(30000, 30003),
        probe=lambda _: True,
    )
    assert ports.port_for(one) == 30001  # what its worker already has (a GM restart)
    got = ports.port_for(two)
    assert got != 30001
    assert ports.port_for(two) == got  # remembered
    ports.forget(two.key)
    workers.objs.clear()
    assert ports.port_for(service("three")) not in (30001,)  # one's port stays taken
    # The exhausted range names the variable that pins the port.
    full = WorkerPorts(
        None,
        env_name="BIG_MODEL_BIND_PORT",
        worker_type="cloud",
        worker_name=str,
        port_range=(30000, 30001),
        probe=lambda _: False,
    )
    with pytest.raises(WorkloadError, match="set BIG_MODEL_BIND_PORT in the cloud worker's"):
        full.port_for(one)


# --- models -----------------------------------------------------------------------------------


class _Models:
    def __init__(self, *objs: ResourceObject) -> None:
        self.objs = {o.key: o for o in objs}

    def get(self, key: ObjectKey) -> ResourceObject | None:
        return self.objs.get(key)


async def test_models_and_their_secrets_are_resolved_or_named() -> None:
    obj = service()
    informer: Any = _Models(model("big", "s3://m/big.onnx", credential="s3"))
    resolved, problems = await resolve_models(obj, informer, None)
    assert [(p.role, p.reason) for p in problems] == [
        ("cloud", "SecretNotFound"),
        ("edge", "ModelNotFound"),
    ]
    assert "Model default/little (spec.edgeWorker.model.name) not found" in problems[1].message
    assert "secret default/s3" in problems[0].message
    assert resolved == {}

    informer.objs[ObjectKey("Model", "default", "little")] = model("little", "models/l.onnx")
    _, problems = await resolve_models(obj, informer, None)
    assert problems[1].reason == "InvalidModel"
    assert "Model default/little (spec.edgeWorker.model.name) spec.url: host path" in (
        problems[1].message
    )

    secrets = StaticSecretSource()
    secrets.put("default", S3Secret(name="s3", endpoint="minio:9000", access_key_id="AK"))
    informer.objs[ObjectKey("Model", "default", "little")] = model("little", "/m/l.onnx")
    _, problems = await resolve_models(obj, informer, secrets)
    assert [(p.role, p.reason) for p in problems] == [("cloud", "InvalidSecret")]
    assert "SECRET_ACCESS_KEY missing" in problems[0].message

    secrets.put(
        "default",
        S3Secret(name="s3", endpoint="minio:9000", access_key_id="AK", secret_access_key="SK"),
    )
    resolved, problems = await resolve_models(obj, informer, secrets)
    assert problems == []
    assert resolved["cloud"].secret is not None
    # The Model's spec.format travels with it (MODEL_FORMAT in the workers' env).
    assert resolved["edge"] == ResolvedModel("little", "/m/l.onnx", None, "onnx")
    assert (await resolve_s3_secret(secrets, "default", "s3")).access_key_id == "AK"
