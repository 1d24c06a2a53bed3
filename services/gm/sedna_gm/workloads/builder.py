"""Build a :class:`WorkerSpec` from a feature resource's pod template (upstream conventions).

Names and labels follow upstream Sedna (reference §2.2):

- labels ``<lower(kind)>.sedna.io/name``, ``…/uid`` and ``…/worker-type``;
- worker names ``<crName>-<lower(workerType)>-<5 chars>`` (the chars hash the worker's key, so
  a reconcile finds the same name again), Deployments ``<crName>-deployment-<workerType>``,
  Services ``<lower(crName-workerType)>``.

The environment (reference §2.4) is the common contract (``NAMESPACE``, ``JOB_NAME`` or
``SERVICE_NAME``, ``WORKER_NAME``, ``LC_SERVER``, ``KB_SERVER``), then the feature's own
variables, then the storage ones (:class:`~sedna_gm.workloads.storage.StoragePlan`), then S3
credentials; the template container's own ``env`` entries win on conflict, as in Kubernetes.

Placement fields (``nodeName``, ``nodeSelector``, ``affinity``, ``tolerations``) stay in the
template as the user wrote them; ``nodeSelector`` and node affinity are validated here
(:class:`~sedna_gm.workloads.placement.NodePlacement`) so a bad value fails with its field
path before any runtime sees it.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sedna.resources.objects import ResourceObject
from sedna.resources.worker import EnvVar, RestartPolicy, WorkerOwner, WorkerSpec
from sedna_gm.workloads.placement import NodePlacement
from sedna_gm.workloads.port import RuntimeMode, WorkloadError
from sedna_gm.workloads.storage import (
    ACCESS_KEY_ENV,
    S3_ENDPOINT_ENV,
    SECRET_KEY_ENV,
    S3Secret,
    StoragePlan,
)

__all__ = [
    "BuiltWorker",
    "WorkerEnvSettings",
    "build_worker",
    "common_env",
    "deployment_name",
    "label_prefix",
    "owner_of",
    "owner_selector",
    "service_name",
    "worker_labels",
    "worker_name",
]

# Kinds whose workers get SERVICE_NAME; every other kind gets JOB_NAME (reference §2.4).
_SERVICE_KINDS = frozenset(
    {"JointInferenceService", "FeatureExtractionService", "ObjectSearchService"}
)
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # like Kubernetes' rand.String: no vowels, no 0/1/3


@dataclass(frozen=True)
class WorkerEnvSettings:
    """GM settings that end up in every worker's environment.

    Attributes
    ----------
    lc_server
        ``LC_SERVER``: the LocalController base URL as a worker sees it
        (upstream's ``localController.server``, e.g. ``http://localhost:9100``).
    kb_server
        ``KB_SERVER``: the knowledge base URL; set only when the feature asks for it.
    """

    lc_server: str = "http://localhost:9100"
    kb_server: str = "http://kb.sedna:9020"


@dataclass(frozen=True)
class BuiltWorker:
    """A worker ready for :meth:`WorkloadRuntime.ensure_worker`.

    Attributes
    ----------
    name
        The worker name (Pod/``Worker`` name; for a Deployment use :func:`deployment_name`).
    spec
        The spec.
    credentials
        Secret environment (local mode only: S3 keys); pass it as ``credentials=``.
    """

    name: str
    spec: WorkerSpec
    credentials: dict[str, str] = field(default_factory=dict, repr=False)


def label_prefix(kind: str) -> str:
    """``<lower(kind)>.sedna.io`` (e.g. ``jointinferenceservice.sedna.io``)."""
    return f"{kind.lower()}.sedna.io"


def owner_selector(kind: str, name: str) -> dict[str, str]:
    """Labels that match every worker of one resource."""
    return {f"{label_prefix(kind)}/name": name}


def worker_labels(owner: WorkerOwner, worker_type: str) -> dict[str, str]:
    """Upstream's worker labels: name, uid (when known) and the lowercased worker type."""
    prefix = label_prefix(owner.kind)
    labels = {f"{prefix}/name": owner.name, f"{prefix}/worker-type": worker_type.lower()}
    if owner.uid:
        labels[f"{prefix}/uid"] = owner.uid
    return labels


def worker_name(cr_name: str, worker_type: str, key: str = "") -> str:
    """``<crName>-<lower(workerType)>-<5 chars>``; the chars are a hash of the inputs.

    Parameters
    ----------
    cr_name, worker_type
        The resource name and worker type.
    key
        Distinguishes workers of one type (e.g. the training worker's index or node).
    """
    digest = int.from_bytes(
        hashlib.sha256(f"{cr_name}/{worker_type.lower()}/{key}".encode()).digest()
    )
    chars = []
    for _ in range(5):
        digest, index = divmod(digest, len(_NAME_CHARS))
        chars.append(_NAME_CHARS[index])
    return f"{cr_name}-{worker_type.lower()}-{''.join(chars)}"


def deployment_name(cr_name: str, worker_type: str) -> str:
    """``<crName>-deployment-<lower(workerType)>``."""
    return f"{cr_name}-deployment-{worker_type.lower()}"


def service_name(cr_name: str, worker_type: str) -> str:
    """``<lower(crName-workerType)>`` (e.g. ``helmet-detection-cloud``)."""
    return f"{cr_name}-{worker_type}".lower()


def owner_of(obj: ResourceObject) -> WorkerOwner:
    """The :class:`WorkerOwner` of a feature resource."""
    return WorkerOwner(
        api_version=obj.api_version,
        kind=obj.kind,
        name=obj.name,
        namespace=obj.namespace,
        uid=obj.uid,
    )


def common_env(
    owner: WorkerOwner,
    name: str,
    settings: WorkerEnvSettings,
    *,
    with_lc: bool = True,
    with_kb: bool = False,
) -> dict[str, str]:
    """The common contract: NAMESPACE, JOB_NAME/SERVICE_NAME, WORKER_NAME, LC_SERVER, KB_SERVER."""
    env = {"NAMESPACE": owner.namespace}
    env["SERVICE_NAME" if owner.kind in _SERVICE_KINDS else "JOB_NAME"] = owner.name
    env["WORKER_NAME"] = name
    if with_lc:
        env["LC_SERVER"] = settings.lc_server
    if with_kb:
        env["KB_SERVER"] = settings.kb_server
    return env


def _containers(template: Mapping[str, Any], path: str) -> list[dict[str, Any]]:
    spec = template.get("spec")
    if not isinstance(spec, dict):
        raise WorkloadError(f"{path}.spec: a pod spec is required")
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise WorkloadError(f"{path}.spec.containers: at least one container is required")
    for index, container in enumerate(containers):
        if not isinstance(container, dict):
            raise WorkloadError(f"{path}.spec.containers[{index}]: must be an object")
    return containers


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WorkloadError(f"{where}: must be a list of strings")
    return list(value)


def _template_env(container: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    env = container.get("env") or []
    if not isinstance(env, list):
        raise WorkloadError(f"{where}: must be a list")
    for index, item in enumerate(env):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise WorkloadError(f"{where}[{index}].name: a non-empty name is required")
    return env


def _merge_env(
    injected: Mapping[str, str], own_env: list[dict[str, Any]], mode: RuntimeMode, path: str
) -> dict[str, str]:
    merged = dict(injected)
    for index, item in enumerate(own_env):
        merged.pop(item["name"], None)  # later entries win; keep the template's order
        if "valueFrom" in item:
            if mode is RuntimeMode.LOCAL:
                raise WorkloadError(
                    f"{path}.env[{index}] ({item['name']}): valueFrom is not supported "
                    "in the local mode; give a value"
                )
            continue  # Kubernetes resolves it from the template entry, which stays in the pod
        merged[item["name"]] = str(item.get("value", ""))
    return merged


def _inject_kubernetes(
    pod_spec: dict[str, Any],
    containers: list[dict[str, Any]],
    *,
    storage: StoragePlan | None,
    s3: S3Secret | None,
    host_network: bool,
    dns_policy: str | None,
    template_path: str,
) -> None:
    # Upstream injects env and mounts into every container; the plain contract variables are
    # added by the Kubernetes runtime from WorkerSpec.env, the secret refs and mounts here.
    for index, container in enumerate(containers):
        env = _template_env(container, f"{template_path}.spec.containers[{index}].env")
        names = {item["name"] for item in env}
        if s3 is not None:
            for key in (ACCESS_KEY_ENV, SECRET_KEY_ENV):
                if key not in names:
                    ref = {"secretKeyRef": {"name": s3.name, "key": key}}
                    env.append({"name": key, "valueFrom": ref})
        if env:
            container["env"] = env
        if storage is not None and storage.volume_mounts:
            container.setdefault("volumeMounts", []).extend(copy.deepcopy(storage.volume_mounts))
    if storage is not None and storage.volumes:
        pod_spec.setdefault("volumes", []).extend(copy.deepcopy(storage.volumes))
    if host_network:
        pod_spec["hostNetwork"] = True
    if dns_policy:
        pod_spec["dnsPolicy"] = dns_policy


def build_worker(
    owner: WorkerOwner,
    worker_type: str,
    template: Mapping[str, Any],
    *,
    mode: RuntimeMode,
    name: str,
    settings: WorkerEnvSettings,
    feature_env: Mapping[str, str] | None = None,
    storage: StoragePlan | None = None,
    s3: S3Secret | None = None,
    with_lc: bool = True,
    with_kb: bool = False,
    default_restart_policy: RestartPolicy = RestartPolicy.ON_FAILURE,
    host_network: bool = False,
    dns_policy: str | None = None,
    template_path: str = "template",
) -> BuiltWorker:
    """Build the worker spec for one worker of ``owner``.

    Parameters
    ----------
    owner
        The feature resource (:func:`owner_of`).
    worker_type
        Upstream worker type (``cloud``, ``edge``, ``aggregation``, ``train``...).
    template
        The pod template from the resource (``spec.<worker>.template``); not modified.
    mode
        The runtime's :attr:`WorkloadRuntime.mode`.
    name
        The worker name, also ``WORKER_NAME`` (:func:`worker_name`).
    settings
        LC/KB addresses for the contract.
    feature_env
        The feature's own variables (``BIG_MODEL_IP``, ``PARTICIPANTS_COUNT``...).
    storage
        Resolved URLs (must use the same ``mode``); its env, volumes and mounts are added.
    s3
        The credentials of the resource's ``credentialName`` Secret, when it has one. On
        Kubernetes the keys become ``secretKeyRef`` entries in every container; locally they
        go into :attr:`BuiltWorker.credentials`. ``S3_ENDPOINT_URL`` is a plain variable.
    with_lc, with_kb
        Whether ``LC_SERVER`` / ``KB_SERVER`` belong to this worker (reference §2.4).
    default_restart_policy
        Used when the template sets no ``restartPolicy``.
    host_network, dns_policy
        Forced into the pod spec when the feature requests it (Kubernetes).
    template_path
        Field path of ``template`` in the resource, for error messages.

    Raises
    ------
    WorkloadError
        The template is malformed (the message names the field; a bad ``nodeSelector`` or
        node affinity raises :class:`~sedna_gm.workloads.placement.PlacementError`), or the
        local mode gets a template it cannot run (no ``command``, an env ``valueFrom``).
    """
    if storage is not None and storage.mode is not mode:
        raise WorkloadError(f"storage plan is for {storage.mode} mode, runtime is {mode}")
    if not isinstance(template, Mapping):
        raise WorkloadError(f"{template_path}: must be an object")
    tpl: dict[str, Any] = copy.deepcopy(dict(template))
    containers = _containers(tpl, template_path)
    pod_spec: dict[str, Any] = tpl["spec"]
    first = containers[0]
    first_path = f"{template_path}.spec.containers[0]"

    injected: dict[str, str] = common_env(owner, name, settings, with_lc=with_lc, with_kb=with_kb)
    injected.update(feature_env or {})
    if storage is not None:
        injected.update(storage.env)
    credentials: dict[str, str] = {}
    if s3 is not None:
        injected[S3_ENDPOINT_ENV] = s3.endpoint_url
        if mode is RuntimeMode.LOCAL:
            credentials = {ACCESS_KEY_ENV: s3.access_key_id, SECRET_KEY_ENV: s3.secret_access_key}

    merged = _merge_env(injected, _template_env(first, f"{first_path}.env"), mode, first_path)
    # An explicit template value wins over the Secret.
    credentials = {k: v for k, v in credentials.items() if k not in merged}
    if mode is RuntimeMode.KUBERNETES:
        _inject_kubernetes(
            pod_spec,
            containers,
            storage=storage,
            s3=s3,
            host_network=host_network,
            dns_policy=dns_policy,
            template_path=template_path,
        )

    command = _str_list(first.get("command"), f"{first_path}.command")
    if mode is RuntimeMode.LOCAL and not command:
        raise WorkloadError(
            f"{first_path}.command: required in the local mode (workers run as processes)"
        )
    raw_policy = pod_spec.get("restartPolicy") or default_restart_policy.value
    try:
        restart_policy = RestartPolicy(raw_policy)
    except ValueError:
        allowed = ", ".join(p.value for p in RestartPolicy)
        raise WorkloadError(
            f"{template_path}.spec.restartPolicy: {raw_policy!r} is not one of {allowed}"
        ) from None
    node_name = NodePlacement.from_pod_spec(pod_spec, f"{template_path}.spec").node_name
    working_dir = first.get("workingDir") or ""
    if not isinstance(working_dir, str):
        raise WorkloadError(f"{first_path}.workingDir: must be a string")

    spec = WorkerSpec(
        owner=owner,
        worker_type=worker_type.lower(),
        node_name=node_name,
        image=str(first.get("image") or ""),
        command=command,
        args=_str_list(first.get("args"), f"{first_path}.args"),
        env=[EnvVar(name=k, value=v) for k, v in merged.items()],
        working_dir=working_dir,
        restart_policy=restart_policy,
        labels=worker_labels(owner, worker_type),
        template=tpl,
    )
    return BuiltWorker(name=name, spec=spec, credentials=credentials)
