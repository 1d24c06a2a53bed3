"""The Kubernetes WorkloadRuntime: Pods, Deployments, their HPAs and ClusterIP Services.

Uses the official (synchronous) ``kubernetes`` client in worker threads. Job workers are Pods
named by the controller (``<crName>-<workerType>-<5 chars>``, the shape upstream's
``generateName`` gives, but stable so a reconcile finds them again); service workers are
Deployments; both carry the worker labels, a controller owner reference to the feature
resource and the spec hash annotation. A changed hash replaces the Deployment's template (a
rolling update) or deletes and recreates the Pod. Failures become :class:`WorkloadError` with
the object, the operation and the API server's message.

Autoscaling: a service worker given an ``autoscaler`` (a JointInferenceService worker's
``hpa``) gets the autoscaling/v2 HorizontalPodAutoscaler ``hpa-<deploymentName>`` (worker
labels, the same owner reference, ``scaleTargetRef`` the Deployment). The autoscaler is part
of the worker's spec hash, so adding, editing or removing it rolls the worker, and the HPA is
created, replaced or deleted *before* the Deployment is written (the Deployment's hash marks
the work done, so a failed HPA call is retried by the next reconcile). While an HPA scales a
Deployment the runtime never sets its replica count after creating it (``minReplicas``):
an update copies the live ``spec.replicas`` (a PUT without it would reset it to 1), as
``kubectl apply`` leaves a field alone that the manifest omits. The Deployment's
``sedna.io/autoscaler`` annotation names the HPA, so workers without one cost no
autoscaling calls (nor RBAC rules); deleting the worker deletes its HPA.

Placement is the scheduler's: the template's ``nodeName``, ``nodeSelector``, ``affinity`` and
``tolerations`` reach the API server as written. A worker's node is read back from where its
pods were bound (``spec.nodeName``): a Pod's own, every live replica's for a Deployment
(:attr:`~sedna_gm.workloads.port.WorkerStatus.replica_nodes`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.worker import WorkerOwner, WorkerPhaseName, WorkerSpec
from sedna_gm.store.k8s_errors import api_status, describe_connection_error, safe_host
from sedna_gm.workloads import k8s_objects
from sedna_gm.workloads.placement import pod_nodes
from sedna_gm.workloads.port import (
    RuntimeMode,
    ServiceEndpoint,
    WorkerStatus,
    WorkloadError,
    check_service,
    spec_hash,
)
from sedna_gm.workloads.storage import S3Secret, SecretNotFoundError

__all__ = ["KubernetesSecretSource", "KubernetesWorkloadRuntime"]

_T = TypeVar("_T")


class _Api:
    """Thread-offloaded raw JSON calls with uniform error mapping."""

    def __init__(self, api_client: k8s.ApiClient, timeout_s: float) -> None:
        self.core = k8s.CoreV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self.autoscaling = k8s.AutoscalingV2Api(api_client)
        self._host = safe_host(str(api_client.configuration.host))
        self._timeout = timeout_s

    async def call(
        self, what: str, fn: Callable[..., Any], *args: Any, missing_ok: bool = False, **kw: Any
    ) -> dict[str, Any] | None:
        """Run ``fn`` in a thread; None for a 404 when ``missing_ok``; else WorkloadError."""

        def run() -> dict[str, Any]:
            resp = fn(*args, _preload_content=False, _request_timeout=self._timeout, **kw)
            data = json.loads(resp.data or b"{}")
            return data if isinstance(data, dict) else {}

        try:
            return await asyncio.to_thread(run)
        except ApiException as exc:
            if exc.status == 404 and missing_ok:
                return None
            raise self.error(what, exc) from exc
        except (HTTPError, OSError) as exc:
            raise WorkloadError(
                f"{what}: the API server {self._host} is unreachable "
                f"({describe_connection_error(exc)})"
            ) from exc

    @staticmethod
    def error(what: str, exc: ApiException) -> WorkloadError:
        status = api_status(exc)
        reason = status.get("reason") or exc.reason or ""
        message = status.get("message") or ""
        return _ApiError(f"{what}: {exc.status} {reason}: {message}".rstrip(": "), exc.status)


class _ApiError(WorkloadError):
    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


class KubernetesSecretSource:
    """Reads ``credentialName`` Secrets from the cluster."""

    def __init__(self, api_client: k8s.ApiClient, *, request_timeout_s: float = 30.0) -> None:
        self._api = _Api(api_client, request_timeout_s)

    async def get_s3_secret(self, namespace: str, name: str) -> S3Secret:
        """Return the Secret's S3 settings; raises :class:`SecretNotFoundError`."""
        data = await self._api.call(
            f"reading secret {namespace}/{name}",
            self._api.core.read_namespaced_secret,
            name,
            namespace,
            missing_ok=True,
        )
        if data is None:
            raise SecretNotFoundError(f"secret {namespace}/{name} not found")
        return S3Secret.from_manifest(data)


class KubernetesWorkloadRuntime:
    """Runs workers as Kubernetes objects (see the module docstring).

    Parameters
    ----------
    api_client
        A configured client (``kubernetes.config.load_*`` or an explicit Configuration).
    request_timeout_s
        Timeout of each API call.
    """

    def __init__(self, api_client: k8s.ApiClient, *, request_timeout_s: float = 30.0) -> None:
        self._api = _Api(api_client, request_timeout_s)

    @property
    def mode(self) -> RuntimeMode:
        """Always :attr:`RuntimeMode.KUBERNETES`."""
        return RuntimeMode.KUBERNETES

    async def ensure_worker(
        self,
        name: str,
        spec: WorkerSpec,
        *,
        replicas: int | None = None,
        credentials: Mapping[str, str] | None = None,
        autoscaler: Mapping[str, Any] | None = None,
    ) -> WorkerStatus:
        """Create or roll the Pod (``replicas`` None) or Deployment (and its HPA); its status.

        ``credentials`` is ignored: the spec's template carries ``secretKeyRef`` entries.
        A Pod being replaced is reported ``Pending`` with ``deleting=True`` until the old
        one is gone; call again on the next reconcile. ``autoscaler``: see the module
        docstring.

        Raises
        ------
        WorkloadError
            The API server refused an object, or an ``autoscaler`` was given for a Pod
            (``replicas`` None) or has invalid replica bounds.
        """
        hash_ = spec_hash(spec, replicas, autoscaler)
        if replicas is None:
            if autoscaler is not None:
                raise WorkloadError(
                    f"worker {spec.owner.namespace}/{name}: an autoscaler needs a Deployment "
                    "(replicas), not a Pod"
                )
            return await self._ensure_pod(name, spec, hash_)
        return await self._ensure_deployment(name, spec, hash_, replicas, autoscaler)

    async def _ensure_pod(self, name: str, spec: WorkerSpec, hash_: str) -> WorkerStatus:
        ns = spec.owner.namespace
        body = k8s_objects.pod_body(name, spec, hash_)
        core = self._api.core
        current = await self._api.call(
            f"reading pod {ns}/{name}", core.read_namespaced_pod, name, ns, missing_ok=True
        )
        if current is not None:
            status = k8s_objects.pod_status(current)
            if status.deleting or status.spec_hash == hash_:
                return status
            # Pod specs are immutable: a new spec means a new pod.
            await self._api.call(
                f"deleting pod {ns}/{name} (spec changed)",
                core.delete_namespaced_pod,
                name,
                ns,
                missing_ok=True,
            )
        try:
            created = await self._api.call(
                f"creating pod {ns}/{name}", core.create_namespaced_pod, ns, body
            )
        except _ApiError as exc:
            if exc.status != 409:
                raise
            return WorkerStatus(
                name=name,
                namespace=ns,
                node_name=spec.node_name,
                phase=WorkerPhaseName.PENDING,
                message="waiting for the previous pod to terminate",
                worker_type=spec.worker_type,
                deleting=True,
            )
        return k8s_objects.pod_status(created or body)

    async def _ensure_deployment(
        self,
        name: str,
        spec: WorkerSpec,
        hash_: str,
        replicas: int,
        autoscaler: Mapping[str, Any] | None,
    ) -> WorkerStatus:
        ns = spec.owner.namespace
        autoscaled = autoscaler is not None
        body = k8s_objects.deployment_body(name, spec, hash_, replicas, autoscaled=autoscaled)
        hpa_body = (
            k8s_objects.autoscaler_body(name, spec, autoscaler, hash_)
            if autoscaler is not None
            else None
        )
        apps = self._api.apps
        for _ in range(3):  # a concurrent write (409) is retried on a fresh read
            current = await self._api.call(
                f"reading deployment {ns}/{name}",
                apps.read_namespaced_deployment,
                name,
                ns,
                missing_ok=True,
            )
            try:
                if current is None or _spec_hash_of(current) != hash_:
                    # The HPA first: the Deployment's hash records that both were written.
                    if hpa_body is not None:
                        await self._ensure_autoscaler(hpa_body)
                    elif current is not None and _autoscaler_of(current):
                        await self._delete_autoscaler(ns, _autoscaler_of(current))
                if current is None:
                    created = await self._api.call(
                        f"creating deployment {ns}/{name}",
                        apps.create_namespaced_deployment,
                        ns,
                        body,
                    )
                    return k8s_objects.deployment_status(created or body)
                status = k8s_objects.deployment_status(current)
                if status.spec_hash == hash_:
                    return await self._with_replica_nodes(status, current)
                # Replace the template: the Deployment controller rolls the pods.
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                live = (current.get("spec") or {}).get("replicas")
                if autoscaled and isinstance(live, int):
                    body["spec"]["replicas"] = live  # the HPA's count, not minReplicas
                replaced = await self._api.call(
                    f"updating deployment {ns}/{name}",
                    apps.replace_namespaced_deployment,
                    name,
                    ns,
                    body,
                )
                return await self._with_replica_nodes(
                    k8s_objects.deployment_status(replaced or body), replaced or body
                )
            except _ApiError as exc:
                if exc.status != 409:
                    raise
        raise WorkloadError(f"deployment {ns}/{name}: kept conflicting with other writers")

    async def _ensure_autoscaler(self, body: dict[str, Any]) -> None:
        """Create the HPA, or replace it when its spec hash or target differs."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        api = self._api.autoscaling
        current = await self._api.call(
            f"reading horizontalpodautoscaler {ns}/{name}",
            api.read_namespaced_horizontal_pod_autoscaler,
            name,
            ns,
            missing_ok=True,
        )
        if current is None:
            await self._api.call(
                f"creating horizontalpodautoscaler {ns}/{name}",
                api.create_namespaced_horizontal_pod_autoscaler,
                ns,
                body,
            )
            return
        target = (current.get("spec") or {}).get("scaleTargetRef")
        if _spec_hash_of(current) == meta["annotations"][k8s_objects.SPEC_HASH_ANNOTATION] and (
            target == body["spec"]["scaleTargetRef"]
        ):
            return
        # A stale resourceVersion is a 409: the caller's loop reads everything again.
        replacement = {
            **body,
            "metadata": {**meta, "resourceVersion": current["metadata"]["resourceVersion"]},
        }
        await self._api.call(
            f"updating horizontalpodautoscaler {ns}/{name}",
            api.replace_namespaced_horizontal_pod_autoscaler,
            name,
            ns,
            replacement,
        )

    async def _delete_autoscaler(self, namespace: str, name: str) -> None:
        await self._api.call(
            f"deleting horizontalpodautoscaler {namespace}/{name}",
            self._api.autoscaling.delete_namespaced_horizontal_pod_autoscaler,
            name,
            namespace,
            missing_ok=True,
        )

    async def _with_replica_nodes(
        self, status: WorkerStatus, deployment: Mapping[str, Any]
    ) -> WorkerStatus:
        """``status`` with the nodes the Deployment's pods are bound to."""
        selector = _match_labels(deployment)
        if not selector:
            return status
        ns = status.namespace
        pods = await self._api.call(
            f"listing pods of deployment {ns}/{status.name}",
            self._api.core.list_namespaced_pod,
            ns,
            label_selector=",".join(f"{k}={v}" for k, v in selector.items()),
        )
        return _replica_nodes(status, deployment, (pods or {}).get("items") or [])

    async def delete_worker(self, namespace: str, name: str) -> None:
        """Delete the Pod or Deployment called ``name`` (background propagation) and the
        HorizontalPodAutoscaler its Deployment names."""
        opts = {"propagation_policy": "Background"}
        deployment = await self._api.call(
            f"reading deployment {namespace}/{name}",
            self._api.apps.read_namespaced_deployment,
            name,
            namespace,
            missing_ok=True,
        )
        hpa = _autoscaler_of(deployment) if deployment is not None else ""
        if hpa:
            await self._delete_autoscaler(namespace, hpa)
        await self._api.call(
            f"deleting pod {namespace}/{name}",
            self._api.core.delete_namespaced_pod,
            name,
            namespace,
            missing_ok=True,
            **opts,
        )
        await self._api.call(
            f"deleting deployment {namespace}/{name}",
            self._api.apps.delete_namespaced_deployment,
            name,
            namespace,
            missing_ok=True,
            **opts,
        )

    async def list_workers(self, owner: WorkerOwner) -> list[WorkerStatus]:
        """The owner's Pods (not those of its Deployments) and Deployments, sorted by name.

        A Deployment's nodes are those of its pods (they carry the owner's labels too).
        """
        selector = k8s_objects.selector_for(owner)
        ns = owner.namespace
        pods = await self._api.call(
            f"listing pods of {owner.kind} {ns}/{owner.name}",
            self._api.core.list_namespaced_pod,
            ns,
            label_selector=selector,
        )
        deployments = await self._api.call(
            f"listing deployments of {owner.kind} {ns}/{owner.name}",
            self._api.apps.list_namespaced_deployment,
            ns,
            label_selector=selector,
        )
        found = [
            k8s_objects.pod_status(p)
            for p in (pods or {}).get("items") or []
            if k8s_objects.owned_by(p, owner)
        ]
        pod_items = (pods or {}).get("items") or []
        found += [
            _replica_nodes(k8s_objects.deployment_status(d), d, pod_items)
            for d in (deployments or {}).get("items") or []
            if k8s_objects.owned_by(d, owner)
        ]
        return sorted(found, key=lambda s: s.name)

    async def ensure_service(
        self,
        namespace: str,
        name: str,
        selector: Mapping[str, str],
        port: int,
        *,
        owner: WorkerOwner | None = None,
        extra_ports: Sequence[tuple[str, int]] = (),
    ) -> ServiceEndpoint:
        """Create or update the ClusterIP Service; return ``<name>.<namespace>:<port>``."""
        check_service(namespace, name, selector, port, extra_ports)
        body = k8s_objects.service_body(
            namespace, name, selector, port, owner, extra_ports=extra_ports
        )
        core = self._api.core
        current = await self._api.call(
            f"reading service {namespace}/{name}",
            core.read_namespaced_service,
            name,
            namespace,
            missing_ok=True,
        )
        if current is None:
            await self._api.call(
                f"creating service {namespace}/{name}",
                core.create_namespaced_service,
                namespace,
                body,
            )
        elif _service_differs(current, body):
            patch = {"spec": {"selector": body["spec"]["selector"], "ports": body["spec"]["ports"]}}
            await self._api.call(
                f"updating service {namespace}/{name}",
                core.patch_namespaced_service,
                name,
                namespace,
                patch,
            )
        return ServiceEndpoint(f"{name}.{namespace}", port)

    async def delete_service(self, namespace: str, name: str) -> None:
        """Delete the Service; no error when absent."""
        await self._api.call(
            f"deleting service {namespace}/{name}",
            self._api.core.delete_namespaced_service,
            name,
            namespace,
            missing_ok=True,
        )

    async def observe_worker_state(
        self,
        node_name: str,
        state: hub_service_pb2.WorkerState,
        *,
        namespace: str | None = None,
    ) -> None:
        """Nothing to do: on Kubernetes the pod status is the source of truth."""


def _spec_hash_of(obj: Mapping[str, Any]) -> str:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(k8s_objects.SPEC_HASH_ANNOTATION, ""))


def _autoscaler_of(deployment: Mapping[str, Any]) -> str:
    """The name of the HPA that scales ``deployment`` ("" for none)."""
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(k8s_objects.AUTOSCALER_ANNOTATION, ""))


def _match_labels(deployment: Mapping[str, Any]) -> dict[str, str]:
    selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {str(k): str(v) for k, v in selector.items()}


def _replica_nodes(
    status: WorkerStatus, deployment: Mapping[str, Any], pods: list[Any]
) -> WorkerStatus:
    nodes = pod_nodes(pods, _match_labels(deployment))
    if not nodes:
        return status
    return dataclasses.replace(status, node_name=nodes[0], replica_nodes=nodes)


def _service_differs(current: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    spec = current.get("spec") or {}
    if (spec.get("selector") or {}) != body["spec"]["selector"]:
        return True
    wanted = body["spec"]["ports"]
    ports = spec.get("ports") or []
    return len(ports) != len(wanted) or any(
        have.get(k) != want[k]
        for have, want in zip(ports, wanted, strict=True)
        for k in ("name", "port")
    )
