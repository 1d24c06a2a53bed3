"""Kubernetes bodies for workers (Pods, Deployments, HPAs, Services) and their observed status.

Pure functions on JSON dicts (camelCase, as the API server speaks), so they are testable
without a cluster. Pods follow upstream (reference §2.2): the template's labels, annotations,
finalizers and spec are copied, the worker labels and a controller owner reference are added,
the contract env goes into every container (each container's own entries win), and
``restartPolicy`` is set only when the template leaves it empty.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from sedna.resources.worker import WorkerOwner, WorkerPhaseName, WorkerSpec
from sedna_gm.workloads.builder import label_prefix
from sedna_gm.workloads.port import WorkerStatus, WorkloadError

__all__ = [
    "APP_LABEL",
    "AUTOSCALER_ANNOTATION",
    "SPEC_HASH_ANNOTATION",
    "autoscaler_body",
    "autoscaler_name",
    "deployment_body",
    "deployment_status",
    "owned_by",
    "owner_reference",
    "pod_body",
    "pod_status",
    "selector_for",
    "service_body",
]

SPEC_HASH_ANNOTATION = "sedna.io/worker-spec-hash"
APP_LABEL = "app.sedna.io"
AUTOSCALER_ANNOTATION = "sedna.io/autoscaler"
"""On a Deployment: the name of the HorizontalPodAutoscaler that scales it."""
_HPA_FIELDS = ("minReplicas", "maxReplicas", "metrics", "behavior")


def owner_reference(owner: WorkerOwner) -> dict[str, Any]:
    """A controller owner reference to the feature resource (needs its uid)."""
    if not owner.uid:
        raise WorkloadError(
            f"{owner.kind} {owner.namespace}/{owner.name}: the owner's uid is required "
            "for an ownerReference (pass the stored object)"
        )
    return {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _pod_template(spec: WorkerSpec, *, force_always: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (template metadata, pod spec) with the worker's env, node and policy."""
    template = copy.deepcopy(spec.template)
    meta: dict[str, Any] = dict(template.get("metadata") or {})
    pod_spec = template.get("spec")
    if not isinstance(pod_spec, dict) or not isinstance(pod_spec.get("containers"), list):
        raise WorkloadError(
            f"worker of {spec.owner.kind} {spec.owner.namespace}/{spec.owner.name}: "
            "template.spec.containers is required"
        )
    meta["labels"] = {**(meta.get("labels") or {}), **spec.labels}
    if spec.node_name:
        pod_spec["nodeName"] = spec.node_name
    if force_always:
        pod_spec["restartPolicy"] = "Always"  # the only policy a Deployment accepts
    elif not pod_spec.get("restartPolicy"):
        pod_spec["restartPolicy"] = spec.restart_policy.value
    # The WorkerSpec is authoritative for the first container's process (it was read from it).
    first = pod_spec["containers"][0] if pod_spec["containers"] else {}
    for key, value in (
        ("image", spec.image),
        ("command", spec.command),
        ("args", spec.args),
        ("workingDir", spec.working_dir),
    ):
        if value:
            first[key] = value
        elif key != "image":
            first.pop(key, None)
    for container in pod_spec["containers"]:
        own = list(container.get("env") or [])
        names = {item.get("name") for item in own}
        injected = [{"name": v.name, "value": v.value} for v in spec.env if v.name not in names]
        container["env"] = injected + own
    return meta, pod_spec


def pod_body(name: str, spec: WorkerSpec, hash_: str) -> dict[str, Any]:
    """The Pod for a job worker."""
    meta, pod_spec = _pod_template(spec, force_always=False)
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": spec.owner.namespace,
        "labels": meta["labels"],
        "annotations": {**(meta.get("annotations") or {}), SPEC_HASH_ANNOTATION: hash_},
        "ownerReferences": [owner_reference(spec.owner)],
    }
    if meta.get("finalizers"):
        metadata["finalizers"] = list(meta["finalizers"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def deployment_body(
    name: str, spec: WorkerSpec, hash_: str, replicas: int, *, autoscaled: bool = False
) -> dict[str, Any]:
    """The Deployment for a service worker (``app.sedna.io: <crName>-<workerType>-svc``).

    ``autoscaled``: an HPA scales it (:data:`AUTOSCALER_ANNOTATION` names it); ``replicas``
    is then the count it starts with, and an update keeps the live count (see
    :class:`~sedna_gm.workloads.kubernetes.KubernetesWorkloadRuntime`).
    """
    if replicas < 0:
        raise WorkloadError(f"deployment {spec.owner.namespace}/{name}: replicas {replicas} < 0")
    meta, pod_spec = _pod_template(spec, force_always=True)
    app = f"{spec.owner.name}-{spec.worker_type}-svc"
    labels = {**spec.labels, APP_LABEL: app}
    meta["labels"] = {**meta["labels"], APP_LABEL: app}
    annotations = {SPEC_HASH_ANNOTATION: hash_}
    if autoscaled:
        annotations[AUTOSCALER_ANNOTATION] = autoscaler_name(name)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": spec.owner.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(spec.owner)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": meta, "spec": pod_spec},
        },
    }


def autoscaler_name(deployment: str) -> str:
    """Upstream's HorizontalPodAutoscaler name for a Deployment: ``hpa-<deploymentName>``."""
    return f"hpa-{deployment}"


def autoscaler_body(
    deployment: str, spec: WorkerSpec, hpa: Mapping[str, Any], hash_: str
) -> dict[str, Any]:
    """The autoscaling/v2 HorizontalPodAutoscaler of a service worker's Deployment.

    Named ``hpa-<deploymentName>`` with the worker labels and the controller owner reference
    (as the Deployment); ``scaleTargetRef`` is the Deployment; ``minReplicas``,
    ``maxReplicas``, ``metrics`` and ``behavior`` are the spec's ``hpa`` as written (the API
    server defaults what it leaves out: ``minReplicas`` 1, a CPU target of 80%). ``hash_``
    (the worker's spec hash) is stored as the Deployment's is.

    Raises
    ------
    WorkloadError
        ``maxReplicas`` is missing or not a positive integer, or ``minReplicas`` exceeds it.
    """
    where = f"horizontalpodautoscaler {spec.owner.namespace}/{autoscaler_name(deployment)}"
    high, low = hpa.get("maxReplicas"), hpa.get("minReplicas")
    if not _positive_int(high):
        raise WorkloadError(f"{where}: hpa.maxReplicas must be a positive integer, not {high!r}")
    if low is not None and (not _positive_int(low) or low > high):
        raise WorkloadError(
            f"{where}: hpa.minReplicas must be an integer from 1 to maxReplicas ({high}), "
            f"not {low!r}"
        )
    hpa_spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment}
    }
    for key in _HPA_FIELDS:
        if hpa.get(key) is not None:
            hpa_spec[key] = copy.deepcopy(hpa[key])
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": autoscaler_name(deployment),
            "namespace": spec.owner.namespace,
            "labels": dict(spec.labels),
            "annotations": {SPEC_HASH_ANNOTATION: hash_},
            "ownerReferences": [owner_reference(spec.owner)],
        },
        "spec": hpa_spec,
    }


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def service_body(
    namespace: str,
    name: str,
    selector: Mapping[str, str],
    port: int,
    owner: WorkerOwner | None,
    *,
    extra_ports: Sequence[tuple[str, int]] = (),
) -> dict[str, Any]:
    """A ClusterIP Service with its main port named ``tcp-0`` (upstream's EdgeMesh service),
    then ``extra_ports`` under their names."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(selector)}
    if owner is not None:
        metadata["ownerReferences"] = [owner_reference(owner)]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [
                {"name": port_name, "port": number, "targetPort": number, "protocol": "TCP"}
                for port_name, number in (("tcp-0", port), *extra_ports)
            ],
        },
    }


def _worker_type(meta: Mapping[str, Any]) -> str:
    for key, value in (meta.get("labels") or {}).items():
        if key.endswith(".sedna.io/worker-type"):
            return str(value)
    return ""


def pod_status(pod: Mapping[str, Any]) -> WorkerStatus:
    """The worker status of a Pod (restarts summed over containers; last exit code)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    raw = status.get("phase") or "Pending"
    phase = WorkerPhaseName(raw) if raw in WorkerPhaseName.__members__.values() else None
    restarts = 0
    exit_code: int | None = None
    reasons: list[str] = []
    for cs in status.get("containerStatuses") or []:
        restarts += int(cs.get("restartCount") or 0)
        state = cs.get("state") or {}
        terminated = state.get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if terminated and terminated.get("exitCode") is not None:
            exit_code = int(terminated["exitCode"])
        waiting = state.get("waiting")
        if waiting and waiting.get("reason"):
            detail = waiting.get("message") or ""
            reasons.append(f"{cs.get('name', '')}: {waiting['reason']} {detail}".strip())
    message = status.get("message") or status.get("reason") or "; ".join(reasons)
    if phase is None:  # "Unknown": the node stopped reporting
        phase = WorkerPhaseName.PENDING
        message = message or f"pod phase {raw}"
    return WorkerStatus(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        node_name=str((pod.get("spec") or {}).get("nodeName") or ""),
        phase=phase,
        restart_count=restarts,
        exit_code=exit_code,
        message=str(message),
        spec_hash=str((meta.get("annotations") or {}).get(SPEC_HASH_ANNOTATION, "")),
        worker_type=_worker_type(meta),
        deleting=meta.get("deletionTimestamp") is not None,
    )


def deployment_status(deployment: Mapping[str, Any]) -> WorkerStatus:
    """Running with an available replica; Failed when the rollout failed; else Pending."""
    meta = deployment.get("metadata") or {}
    status = deployment.get("status") or {}
    template_spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    phase = WorkerPhaseName.PENDING
    message = ""
    for cond in status.get("conditions") or []:
        failed_progress = cond.get("type") == "Progressing" and cond.get("status") == "False"
        replica_failure = cond.get("type") == "ReplicaFailure" and cond.get("status") == "True"
        if failed_progress or replica_failure:
            phase = WorkerPhaseName.FAILED
            message = f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ")
    if phase is not WorkerPhaseName.FAILED and int(status.get("availableReplicas") or 0) > 0:
        phase = WorkerPhaseName.RUNNING
    return WorkerStatus(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        node_name=str(template_spec.get("nodeName") or ""),
        phase=phase,
        message=message,
        spec_hash=str((meta.get("annotations") or {}).get(SPEC_HASH_ANNOTATION, "")),
        worker_type=_worker_type(meta),
        deleting=meta.get("deletionTimestamp") is not None,
    )


def owned_by(obj: Mapping[str, Any], owner: WorkerOwner) -> bool:
    """Whether the object's controller reference is ``owner`` (not e.g. a ReplicaSet)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        same = ref.get("kind") == owner.kind and ref.get("name") == owner.name
        if ref.get("controller") and same:
            return not owner.uid or ref.get("uid") == owner.uid
    return False


def selector_for(owner: WorkerOwner) -> str:
    """The label selector (``<kind>.sedna.io/name=<name>``) for listing ``owner``'s workers."""
    return f"{label_prefix(owner.kind)}/name={owner.name}"
