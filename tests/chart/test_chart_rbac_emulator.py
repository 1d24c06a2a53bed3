"""The GlobalManager in Kubernetes mode with the chart's RBAC as its only permissions.

The Kubernetes API emulator (``support.k8s_emulator``, on kmock) has no authorization of its
own, so this test adds one: an RBAC authorizer that evaluates the chart's rendered ClusterRole
and ClusterRoleBinding for the identity of each request's bearer token, as the API server's
RBAC authorizer does (group, resource, subresource, verb; no wildcards to expand, the test
in test_chart_rbac.py refuses them). The GM's kubeconfig token is the chart's ServiceAccount
``system:serviceaccount:sedna:sedna-gm``; the test's own client is an administrator.

The GM then runs joint inference with an ``hpa`` (Deployments, a Service, an HPA), a Dataset on
``s3://`` whose ``credentialName`` Secret it reads, and the deletes, with every request checked.
Nothing it does may be forbidden. The converse shows the authorizer bites: without the
Deployment ``create`` grant the GM gets 403 and says so in the service's status.

Not covered by the emulator: admission, the TokenReview of a real ServiceAccount token, and
aggregated ClusterRoles.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import attrs
import grpc
import kmock
import pytest
import yaml
from chart.helm_chart import NAMESPACE, REPO
from kubernetes import client as k8s_client
from support import k8s_emulator
from support.embedded import embedded_stack
from support.modules import load_module

from sedna.api.gm.v1 import resource_service_pb2 as pb

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CRDS = sorted((REPO / "crds").glob("sedna.io_*.yaml"))
HELMET = REPO / "tests" / "fixtures" / "upstream_examples" / "helmet-detection-joint-inference.yaml"
GM_TOKEN = "gm-token"  # what k8s_emulator.write_kubeconfig gives the GM
ADMIN_TOKEN = "admin-token"

ji = load_module(
    "sedna_e2e_joint_inference_controller",
    REPO / "tests" / "e2e" / "test_joint_inference_controller.py",
)


@dataclass(frozen=True)
class Decision:
    user: str
    verb: str
    group: str
    resource: str
    namespace: str | None
    allowed: bool


class RbacAuthorizer:
    """RBAC over rendered ClusterRoles and (Cluster)RoleBindings, for ServiceAccount users."""

    def __init__(self, objects: list[dict[str, Any]], tokens: dict[str, str]) -> None:
        self.roles = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ClusterRole"}
        self.bindings = [o for o in objects if o["kind"] in ("ClusterRoleBinding", "RoleBinding")]
        self.tokens = tokens  # bearer token -> user name
        self.decisions: list[Decision] = []

    def user_of(self, headers: Any) -> str:
        auth = str(headers.get("Authorization", ""))
        token = auth.removeprefix("Bearer ").strip()
        return self.tokens.get(token, "system:anonymous")

    def _rules_of(self, user: str, namespace: str | None) -> list[dict[str, Any]]:
        rules: list[dict[str, Any]] = []
        for binding in self.bindings:
            if binding["kind"] == "RoleBinding" and binding["metadata"]["namespace"] != namespace:
                continue
            for subject in binding.get("subjects") or []:
                if subject["kind"] != "ServiceAccount":
                    continue
                name = f"system:serviceaccount:{subject['namespace']}:{subject['name']}"
                if name == user and binding["roleRef"]["kind"] == "ClusterRole":
                    rules += self.roles[binding["roleRef"]["name"]]["rules"]
        return rules

    def allows(
        self, user: str, verb: str, group: str, resource: str, namespace: str | None
    ) -> bool:
        if user == "admin":
            return True
        allowed = any(
            group in rule.get("apiGroups", [])
            and resource in rule.get("resources", [])
            and verb in rule.get("verbs", [])
            for rule in self._rules_of(user, namespace)
        )
        self.decisions.append(Decision(user, verb, group, resource, namespace, allowed))
        return allowed


def _verb(request: kmock.Request) -> str:
    method = str(request.method.value).upper()
    if method == "GET":
        if request.params.get("watch") in ("true", "1"):
            return "watch"
        return "get" if request.name else "list"
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if request.name else "deletecollection",
    }[method]


@attrs.define(kw_only=True)
class RbacEmulator(k8s_emulator.ApiServerEmulator):
    """The API emulator with an RBAC authorizer in front of every resource request."""

    authorizer: RbacAuthorizer | None = attrs.field(default=None)

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None and self.authorizer is not None:
            user = self.authorizer.user_of(request.headers)
            verb = _verb(request)
            group, plural = request.resource.group or "", request.resource.plural
            resource = f"{plural}/{request.subresource}" if request.subresource else plural
            if not self.authorizer.allows(user, verb, group, resource, request.namespace):
                scope = (
                    f' in the namespace "{request.namespace}"'
                    if request.namespace
                    else " at the cluster scope"
                )
                raise kmock.KubernetesError(
                    status=403,
                    reason="Forbidden",
                    message=(
                        f'{resource}{"." + group if group else ""} is forbidden: User "{user}" '
                        f'cannot {verb} resource "{plural}" in API group "{group}"{scope}'
                    ),
                    details={"group": group, "kind": plural},
                )
        return await super()._handle(request)


@contextlib.asynccontextmanager
async def rbac_cluster(authorizer: RbacAuthorizer) -> AsyncIterator[k8s_emulator.EmulatedCluster]:
    """Like ``k8s_emulator.emulated_api_server`` (CRDs, built-in resources, namespace
    ``default``), with the authorizer; the yielded client is the administrator."""
    emulator = RbacEmulator(authorizer=authorizer)
    emulator.resources.load_bundled()
    emulator.set_namespaces({"default", NAMESPACE})
    emulator.install_crds_from(CRDS)
    async with emulator, kmock.Server(emulator) as server:
        configuration = k8s_client.Configuration()
        configuration.host = str(server.url).rstrip("/")
        configuration.api_key = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        configuration.retries = 0
        api_client = k8s_client.ApiClient(configuration)
        try:
            yield k8s_emulator.EmulatedCluster(
                emulator, api_client, configuration.host, ADMIN_TOKEN
            )
        finally:
            await asyncio.to_thread(api_client.close)


@contextlib.asynccontextmanager
async def gm_with_chart_rbac(
    tmp_path: Path, objects: list[dict[str, Any]]
) -> AsyncIterator[tuple[k8s_emulator.EmulatedCluster, Any, RbacAuthorizer]]:
    """The GM (Kubernetes store and runtime) as the chart's ServiceAccount, and an LC."""
    (account,) = [o for o in objects if o["kind"] == "ServiceAccount"]
    identity = f"system:serviceaccount:{NAMESPACE}:{account['metadata']['name']}"
    authorizer = RbacAuthorizer(objects, {GM_TOKEN: identity, ADMIN_TOKEN: "admin"})
    async with rbac_cluster(authorizer) as cluster:
        config = k8s_emulator.write_kubeconfig(tmp_path / "kubeconfig", cluster.host)
        stack = embedded_stack(
            tmp_path,
            store_url=f"kubernetes://{config}",
            runtime="kubernetes",
            kubeconfig=config,
            hub_state_url=f"sqlite:///{tmp_path / 'hub.db'}",
            heartbeat_seconds=0.5,
            workload_poll_seconds=0.2,
            secret_refresh_seconds=0.5,
        )
        async with stack as running, grpc.aio.insecure_channel(running.gm_address) as channel:
            yield cluster, ji.Api(channel), authorizer


def _helmet_with_hpa() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(HELMET.read_text()) if d]
    service = next(d for d in docs if d["kind"] == ji.KIND)
    scaled = copy.deepcopy(service)
    scaled["spec"]["edgeWorker"]["hpa"] = {"minReplicas": 1, "maxReplicas": 3}
    return [scaled if d["kind"] == ji.KIND else d for d in docs], scaled


def _s3_dataset() -> tuple[dict[str, Any], dict[str, Any]]:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "s3-creds",
            "namespace": "default",
            "annotations": {"s3-endpoint": "127.0.0.1:1", "s3-usehttps": "0"},
        },
        "stringData": {"ACCESS_KEY_ID": "access", "SECRET_ACCESS_KEY": "secret-key"},
    }
    dataset = {
        "apiVersion": "sedna.io/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": "s3-samples", "namespace": "default"},
        "spec": {
            "url": "s3://bucket/train.txt",
            "format": "txt",
            "nodeName": "edge-1",
            "credentialName": "s3-creds",
        },
    }
    return secret, dataset


async def _create_secret(cluster: k8s_emulator.EmulatedCluster, body: dict[str, Any]) -> None:
    core = k8s_client.CoreV1Api(cluster.api_client)
    await asyncio.to_thread(core.create_namespaced_secret, "default", body, _preload_content=False)


async def _read_hpa(cluster: k8s_emulator.EmulatedCluster, name: str) -> dict[str, Any] | None:
    api = k8s_client.AutoscalingV2Api(cluster.api_client)

    def run() -> dict[str, Any] | None:
        try:
            resp = api.read_namespaced_horizontal_pod_autoscaler(
                name, "default", _preload_content=False
            )
        except k8s_client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = json.loads(resp.data)
        assert isinstance(data, dict)
        return data

    return await asyncio.to_thread(run)


def _gm_decisions(authorizer: RbacAuthorizer) -> list[Decision]:
    return [d for d in authorizer.decisions if d.user != "admin"]


async def test_the_gm_runs_with_the_charts_rbac(
    tmp_path: Path, rendered_sets: dict[str, list[dict[str, Any]]]
) -> None:
    docs, service = _helmet_with_hpa()
    name = service["metadata"]["name"]
    secret, dataset = _s3_dataset()
    async with gm_with_chart_rbac(tmp_path, rendered_sets["defaults"]) as (cluster, api, authz):
        await _create_secret(cluster, secret)
        for doc in [*docs, dataset]:
            await api.apply(doc)

        # Joint inference: both Deployments, the cloud Service, the edge HPA, then Running.
        await ji.deployed_with_the_env_contract(cluster, docs)

        async def hpa_created() -> bool:
            return await _read_hpa(cluster, f"hpa-{name}-deployment-edge") is not None

        await ji.eventually(hpa_created, 30, "the edge worker's HPA")
        await ji.status_follows_the_deployments(cluster, api, name)

        # The Dataset's Secret was read through the GM's own identity.
        async def credentials_resolved() -> bool:
            status = await api.status("s3-samples", "Dataset")
            return ji.condition(status, "CredentialsReady").get("status") == "True"

        await ji.eventually(credentials_resolved, 30, "CredentialsReady=True")

        # Deletes: the HPA, Deployments and Service go, the finalizers are released.
        await ji.delete_removes_everything(cluster, api, name)
        assert await _read_hpa(cluster, f"hpa-{name}-deployment-edge") is None
        await api.delete("s3-samples", "Dataset")
        await ji.eventually(
            lambda: api.gone("s3-samples", "Dataset"), 30, "the Dataset gone (finalizer released)"
        )

    decisions = _gm_decisions(authz)
    denied = sorted({(d.group, d.resource, d.verb) for d in decisions if not d.allowed})
    assert denied == [], "the chart's ClusterRole forbids calls the GM made"
    used = {(d.group, d.resource, d.verb) for d in decisions}
    # The run really went through the checks: the store, the status writes, workers, the
    # autoscaler and the Secret each made authorized requests.
    for expected in [
        ("sedna.io", "jointinferenceservices", "watch"),
        ("sedna.io", "jointinferenceservices/status", "update"),
        ("sedna.io", "datasets", "update"),
        ("apps", "deployments", "create"),
        ("", "services", "create"),
        ("autoscaling", "horizontalpodautoscalers", "create"),
        ("autoscaling", "horizontalpodautoscalers", "delete"),
        ("", "secrets", "get"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ]:
        assert expected in used, f"{expected} was never requested"


async def test_a_missing_grant_is_forbidden_and_reported(
    tmp_path: Path, rendered_sets: dict[str, list[dict[str, Any]]]
) -> None:
    objects = copy.deepcopy(rendered_sets["defaults"])
    (role,) = [o for o in objects if o["kind"] == "ClusterRole"]
    for rule in role["rules"]:
        if rule["apiGroups"] == ["apps"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != "create"]
    docs, service = _helmet_with_hpa()
    name = service["metadata"]["name"]
    async with gm_with_chart_rbac(tmp_path, objects) as (_cluster, api, authz):
        for doc in docs:
            await api.apply(doc)

        # The GM records the API server's refusal as a Warning event on the service (what
        # `sedna describe` and `kubectl describe` show), naming the object and the verb.
        async def forbidden_reported() -> bool:
            reply = await api.stub.ListEvents(
                pb.ListEventsRequest(kind=ji.KIND, namespace="default", name=name)
            )
            return any(
                e.type == "Warning"
                and "403 Forbidden" in e.message
                and 'cannot create resource "deployments"' in e.message
                for e in reply.events
            )

        await ji.eventually(forbidden_reported, 30, "a Warning event with the 403")
        status = await api.status(name)
        assert status.get("phase") != "Running"
    denied = {(d.group, d.resource, d.verb) for d in _gm_decisions(authz) if not d.allowed}
    assert denied == {("apps", "deployments", "create")}


def doc_manifest(cloud: str, edge: str, version: str) -> list[dict[str, Any]]:
    """The joint-inference manifest of docs/kubernetes.md, with its placeholders filled in as
    the walkthrough's ``sed`` command fills them."""
    text = (REPO / "docs" / "kubernetes.md").read_text()
    start = "cat > /tmp/joint-inference-k8s.yaml <<'EOF'\n"
    assert start in text
    body = text.split(start, 1)[1].split("\nEOF\n", 1)[0]
    for placeholder, value in (
        ("@CLOUD_NODE@", cloud),
        ("@EDGE_NODE@", edge),
        ("@VERSION@", version),
    ):
        assert placeholder in body
        body = body.replace(placeholder, value)
    assert "@" not in body, "a placeholder the walkthrough's sed command does not fill"
    return [d for d in yaml.safe_load_all(body) if d]


async def test_the_walkthrough_manifest_deploys(
    tmp_path: Path, rendered_sets: dict[str, list[dict[str, Any]]]
) -> None:
    """docs/kubernetes.md's manifest, applied to the GM with the chart's RBAC: the workers keep
    the walkthrough's image, node and hostPath mount next to the GM's Model mount."""
    docs = doc_manifest("cloud", "edge-1", "0.1.0")
    assert [d["kind"] for d in docs] == ["Model", "Model", "Dataset", ji.KIND]
    name = docs[-1]["metadata"]["name"]
    async with gm_with_chart_rbac(tmp_path, rendered_sets["defaults"]) as (cluster, api, authz):
        for doc in docs:
            await api.apply(doc)
        cloud, edge, _svc = await ji.deployed_with_the_env_contract(cluster, docs)
        edge_pod = edge["spec"]["template"]["spec"]
        assert edge_pod["nodeName"] == "edge-1"
        container = edge_pod["containers"][0]
        assert container["image"] == "ghcr.io/sedna-ai/sedna-inference:0.1.0"
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp/sedna-joint-inference", "/home/data/tmp/sedna-joint-inference/models"} <= (
            mounts
        )
        assert {"example"} < {v["name"] for v in edge_pod["volumes"]}
        assert ji.container_env(edge)["LC_SERVER"] == "http://localhost:9100"
        assert ji.container_env(cloud)["MODEL_URL"] == (
            "/home/data/tmp/sedna-joint-inference/models/big.onnx"
        )
        await ji.status_follows_the_deployments(cluster, api, name)
        await ji.delete_removes_everything(cluster, api, name)
    denied = {(d.group, d.resource, d.verb) for d in _gm_decisions(authz) if not d.allowed}
    assert denied == set()
