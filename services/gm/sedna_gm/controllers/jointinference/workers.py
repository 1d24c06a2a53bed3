"""The two workers of a JointInferenceService and their environment contract (pure logic).

The cloud worker serves the big model, the edge worker runs the small model and sends hard
examples to the cloud (reference §2.4, §2.5 and the joint-inference wire decisions):

- cloud: ``MODEL_URL`` and ``MODEL_FORMAT`` (the big model's ``spec.url`` and ``spec.format``,
  the format only when the Model sets one), ``BIG_MODEL_BIND_IP`` (``0.0.0.0``),
  ``BIG_MODEL_BIND_PORT``, ``BIG_MODEL_NAME`` plus the common contract (``NAMESPACE``,
  ``SERVICE_NAME``, ``WORKER_NAME``, ``LC_SERVER``);
- edge: ``MODEL_URL`` and ``MODEL_FORMAT`` (the small model), ``HEM_NAME``, ``HEM_PARAMETERS``
  (upstream's JSON list of ``{"key", "value"}``), ``BIG_MODEL_IP``, ``BIG_MODEL_PORT``,
  ``BIG_MODEL_NAME`` plus the common contract. On Kubernetes the edge pod uses the host
  network (as upstream, so it reaches the node's LC at ``LC_SERVER``) with
  ``dnsPolicy: ClusterFirstWithHostNet`` unless the template sets a policy, so the cloud
  Service's name resolves.

Both workers are Deployments (``<name>-deployment-cloud`` / ``-edge``; replicas from
``hpa.minReplicas``, else 1). A worker with an ``hpa`` also gets the HorizontalPodAutoscaler
``hpa-<deploymentName>`` (:func:`hpa_of`, applied by the Kubernetes runtime), which then owns
the replica count. In the local mode each is one process on its node (an ``hpa`` is ignored,
and the controller says so), and
``WORKER_NAME`` is that name in both modes (so the node's LC can tell whose report it is).
The template container's own ``env`` entries win over everything injected (Kubernetes
semantics), which is how a user pins ``BIG_MODEL_BIND_PORT`` or ``BIG_MODEL_IP``.

In the local mode the GM does not inject ``LC_SERVER``: the node's LC sets it to its own report
API, which the GM cannot know (several LCs may share one machine).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sedna.resources.objects import ResourceObject
from sedna.resources.worker import RestartPolicy
from sedna_gm.workloads.builder import (
    WorkerEnvSettings,
    build_worker,
    deployment_name,
    owner_of,
)
from sedna_gm.workloads.lifecycle import DesiredWorker
from sedna_gm.workloads.port import RuntimeMode, ServiceEndpoint, WorkloadError
from sedna_gm.workloads.storage import S3Secret, StoragePlan

__all__ = [
    "BIG_MODEL_BIND_PORT_ENV",
    "CLOUD",
    "DEFAULT_BIG_MODEL_PORT",
    "EDGE",
    "HOST_NETWORK_DNS_POLICY",
    "MODEL_FORMAT_ENV",
    "ResolvedModel",
    "build_cloud_worker",
    "build_edge_worker",
    "explicit_env",
    "explicit_port",
    "hem_name",
    "hem_parameters_json",
    "hpa_of",
    "replicas_of",
    "spec_key",
    "spec_path",
    "template_of",
    "worker_name_of",
]

CLOUD = "cloud"
EDGE = "edge"
DEFAULT_BIG_MODEL_PORT = 5000
"""Upstream's big-model port (the Kubernetes Service port and the default bind port)."""
BIG_MODEL_BIND_PORT_ENV = "BIG_MODEL_BIND_PORT"
HOST_NETWORK_DNS_POLICY = "ClusterFirstWithHostNet"
MODEL_FORMAT_ENV = "MODEL_FORMAT"
"""The Model's ``spec.format``, given to both workers next to ``MODEL_URL``."""

_SPEC_KEYS = {CLOUD: "cloudWorker", EDGE: "edgeWorker"}


@dataclass(frozen=True)
class ResolvedModel:
    """A Model a worker loads, with the credentials of its ``credentialName``.

    Attributes
    ----------
    name
        The Model's name.
    url
        Its ``spec.url``.
    secret
        The S3 credentials of its ``credentialName`` Secret (None without one).
    format
        Its ``spec.format`` (``onnx``, ``pt``, ``pb``, ...; "" when it sets none).
    """

    name: str
    url: str
    secret: S3Secret | None = None
    format: str = ""


def worker_name_of(service_name: str, role: str) -> str:
    """The worker (Deployment / local ``Worker``) name of ``role``: ``<name>-deployment-<role>``."""
    return deployment_name(service_name, role)


def spec_key(role: str) -> str:
    """The spec field of ``role``'s worker: ``cloudWorker`` or ``edgeWorker``."""
    return _SPEC_KEYS[role]


def spec_path(role: str) -> str:
    """The field path of a worker in the spec, e.g. ``spec.cloudWorker``."""
    return f"spec.{_SPEC_KEYS[role]}"


def _worker_spec(obj: ResourceObject, role: str) -> Mapping[str, Any]:
    spec = obj.spec.get(_SPEC_KEYS[role])
    return spec if isinstance(spec, Mapping) else {}


def template_of(obj: ResourceObject, role: str) -> Mapping[str, Any]:
    """The pod template of ``role``'s worker (empty when absent)."""
    template = _worker_spec(obj, role).get("template")
    return template if isinstance(template, Mapping) else {}


_HPA_FIELDS = ("minReplicas", "maxReplicas", "metrics", "behavior")


def hpa_of(obj: ResourceObject, role: str) -> dict[str, Any] | None:
    """``role``'s ``hpa`` (its autoscaling/v2 fields), None when the worker has none."""
    hpa = _worker_spec(obj, role).get("hpa")
    if not isinstance(hpa, Mapping):
        return None
    return {key: hpa[key] for key in _HPA_FIELDS if hpa.get(key) is not None}


def replicas_of(obj: ResourceObject, role: str) -> int:
    """The Deployment replicas of ``role``: ``hpa.minReplicas`` when an HPA is given, else 1."""
    hpa = _worker_spec(obj, role).get("hpa")
    if isinstance(hpa, Mapping):
        low = hpa.get("minReplicas")
        if isinstance(low, int) and not isinstance(low, bool) and low >= 1:
            return low
    return 1


def explicit_env(template: Mapping[str, Any], name: str) -> str | None:
    """The value the template's first container gives ``name`` (None when it sets none)."""
    spec = template.get("spec")
    containers = spec.get("containers") if isinstance(spec, Mapping) else None
    if not isinstance(containers, list) or not containers or not isinstance(containers[0], dict):
        return None
    found: str | None = None
    for item in containers[0].get("env") or []:
        if isinstance(item, Mapping) and item.get("name") == name and "value" in item:
            found = str(item["value"])  # later entries win, as in Kubernetes
    return found


def explicit_port(obj: ResourceObject) -> int | None:
    """``BIG_MODEL_BIND_PORT`` as the cloud template pins it (None when it does not).

    Raises
    ------
    WorkloadError
        The value is not a port number (the message names the field).
    """
    raw = explicit_env(template_of(obj, CLOUD), BIG_MODEL_BIND_PORT_ENV)
    if raw is None:
        return None
    try:
        port = int(raw.strip())
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise WorkloadError(
            f"{spec_path(CLOUD)}.template.spec.containers[0].env {BIG_MODEL_BIND_PORT_ENV}: "
            f"{raw!r} is not a port number (1-65535)"
        )
    return port


def hem_parameters_json(obj: ResourceObject) -> str:
    """``HEM_PARAMETERS``: the parameters as upstream's compact JSON list (``[]`` for none)."""
    mining = _worker_spec(obj, EDGE).get("hardExampleMining")
    params = mining.get("parameters") if isinstance(mining, Mapping) else None
    items = [
        {"key": str(p.get("key", "")), "value": str(p.get("value", ""))}
        for p in params or []
        if isinstance(p, Mapping)
    ]
    return json.dumps(items, separators=(",", ":"))


def hem_name(obj: ResourceObject) -> str:
    """``HEM_NAME``: the hard example mining algorithm."""
    mining = _worker_spec(obj, EDGE).get("hardExampleMining")
    return str(mining.get("name", "")) if isinstance(mining, Mapping) else ""


def _build(
    obj: ResourceObject,
    role: str,
    model: ResolvedModel,
    *,
    mode: RuntimeMode,
    settings: WorkerEnvSettings,
    feature_env: Mapping[str, str],
    host_network: bool = False,
) -> DesiredWorker:
    template = template_of(obj, role)
    path = f"{spec_path(role)}.template"
    storage = StoragePlan(mode)
    storage.add("MODEL_URL", model.url)
    if model.format:
        # Next to MODEL_URL: a server picks its backend from it when the URL has no suffix.
        feature_env = {**feature_env, MODEL_FORMAT_ENV: model.format}
    spec = template.get("spec")
    dns_policy = None
    if host_network and mode is RuntimeMode.KUBERNETES:
        has_policy = isinstance(spec, Mapping) and spec.get("dnsPolicy")
        dns_policy = None if has_policy else HOST_NETWORK_DNS_POLICY
    name = worker_name_of(obj.name, role)
    built = build_worker(
        owner_of(obj),
        role,
        template,
        mode=mode,
        name=name,
        settings=settings,
        feature_env=feature_env,
        storage=storage,
        s3=model.secret,
        # Locally the node's LC sets LC_SERVER to its own report API.
        with_lc=mode is RuntimeMode.KUBERNETES,
        # Service workers run until stopped, as a Deployment's pods; a template asking for
        # another policy is honoured in the local mode (a Deployment forces Always).
        default_restart_policy=RestartPolicy.ALWAYS,
        host_network=host_network and mode is RuntimeMode.KUBERNETES,
        dns_policy=dns_policy,
        template_path=path,
    )
    # Only Kubernetes can scale a worker; the local runtime runs one process whatever the hpa.
    autoscaler = hpa_of(obj, role) if mode is RuntimeMode.KUBERNETES else None
    return DesiredWorker(built.spec, replicas_of(obj, role), built.credentials, autoscaler)


def build_cloud_worker(
    obj: ResourceObject,
    model: ResolvedModel,
    *,
    mode: RuntimeMode,
    settings: WorkerEnvSettings,
    port: int,
) -> DesiredWorker:
    """The cloud worker: serves ``model`` on ``port`` under the service's name.

    Raises
    ------
    WorkloadError
        The template is malformed (the message names the field) or the model URL is unusable.
    """
    env = {
        "BIG_MODEL_BIND_IP": "0.0.0.0",
        BIG_MODEL_BIND_PORT_ENV: str(port),
        "BIG_MODEL_NAME": obj.name,
    }
    return _build(obj, CLOUD, model, mode=mode, settings=settings, feature_env=env)


def build_edge_worker(
    obj: ResourceObject,
    model: ResolvedModel,
    *,
    mode: RuntimeMode,
    settings: WorkerEnvSettings,
    cloud: ServiceEndpoint,
) -> DesiredWorker:
    """The edge worker: ``model`` plus hard example mining, offloading to ``cloud``.

    Raises
    ------
    WorkloadError
        The template is malformed (the message names the field) or the model URL is unusable.
    """
    env = {
        "HEM_NAME": hem_name(obj),
        "HEM_PARAMETERS": hem_parameters_json(obj),
        "BIG_MODEL_IP": cloud.host,
        "BIG_MODEL_PORT": str(cloud.port),
        "BIG_MODEL_NAME": obj.name,
    }
    return _build(
        obj, EDGE, model, mode=mode, settings=settings, feature_env=env, host_network=True
    )
