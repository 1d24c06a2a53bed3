"""The WorkloadRuntime port: how the GM runs workers (Kubernetes objects or LC processes).

Feature controllers build a :class:`~sedna.resources.worker.WorkerSpec` per worker (see
:mod:`sedna_gm.workloads.builder`), decide what to do with
:func:`sedna_gm.workloads.lifecycle.plan_workers`, and apply the decisions through a
:class:`WorkloadRuntime`. Two adapters implement it:

- :class:`sedna_gm.workloads.kubernetes.KubernetesWorkloadRuntime`: Pods (job workers),
  Deployments (service workers, when ``replicas`` is given) and ClusterIP Services;
- :class:`sedna_gm.workloads.local.LocalWorkloadRuntime`: ``Worker`` objects sent to the
  node's LocalController, which runs them as processes and reports ``WorkerState`` back.

Every method is idempotent: controllers call them on every reconcile.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.worker import WorkerOwner, WorkerPhaseName, WorkerSpec

__all__ = [
    "RuntimeMode",
    "ServiceEndpoint",
    "WorkerStatus",
    "WorkloadError",
    "WorkloadRuntime",
    "check_service",
    "spec_hash",
]


class RuntimeMode(StrEnum):
    """Where workers run; decides the storage and credential rules of the builder."""

    KUBERNETES = "kubernetes"
    LOCAL = "local"


class WorkloadError(Exception):
    """A runtime operation failed; the message names the object and the cause."""


@dataclass(frozen=True)
class WorkerStatus:
    """A worker as the runtime observes it.

    Attributes
    ----------
    name, namespace
        The worker's name (Pod, Deployment or ``Worker`` object name).
    node_name
        Node that runs it ("" while unscheduled): a Pod's ``spec.nodeName`` once the
        scheduler bound it (or as the template set it), the node the local runtime chose;
        for a Deployment the first of :attr:`replica_nodes` (else its template's nodeName).
    phase
        Pod-style phase. A Deployment is ``Running`` while it has an available replica,
        ``Failed`` when its rollout failed (progress deadline exceeded, replica failure).
    restart_count
        Container or process restarts so far.
    exit_code
        Last exit code of a terminated container or process, when known.
    message
        Why the worker is in its phase (human readable, may be empty).
    spec_hash
        :func:`spec_hash` of the spec it was created from ("" when unknown).
    worker_type
        The worker type label ("" when unknown).
    deleting
        True while the worker is being deleted (it still counts as present).
    replica_nodes
        Deployments: the nodes its live, bound pods run on (sorted, unique); else empty.
    """

    name: str
    namespace: str
    node_name: str = ""
    phase: WorkerPhaseName = WorkerPhaseName.PENDING
    restart_count: int = 0
    exit_code: int | None = None
    message: str = ""
    spec_hash: str = ""
    worker_type: str = ""
    deleting: bool = False
    replica_nodes: tuple[str, ...] = ()

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node running the worker (empty while unscheduled).

        See :func:`sedna_gm.workloads.placement.worker_nodes` for a set of workers.
        """
        if self.replica_nodes:
            return self.replica_nodes
        return (self.node_name,) if self.node_name else ()

    @property
    def finished(self) -> bool:
        """True for ``Succeeded`` and ``Failed``."""
        return self.phase in (WorkerPhaseName.SUCCEEDED, WorkerPhaseName.FAILED)


@dataclass(frozen=True)
class ServiceEndpoint:
    """Where other workers reach a service worker."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def spec_hash(
    spec: WorkerSpec,
    replicas: int | None = None,
    autoscaler: Mapping[str, Any] | None = None,
) -> str:
    """Return a short stable hash of ``spec`` (and ``replicas``) to detect spec changes.

    Parameters
    ----------
    spec
        The worker spec.
    replicas
        The Deployment replica count, or None for a single worker.
    autoscaler
        The worker's ``hpa`` (autoscaling/v2 fields), None without one. Only hashed when
        given, so the hash of a worker without one is what it always was.

    Returns
    -------
    str
        16 hex characters (valid as a Kubernetes label value).
    """
    body: dict[str, Any] = {
        "spec": spec.model_dump(by_alias=True, mode="json"),
        "replicas": replicas,
    }
    if autoscaler is not None:
        body["autoscaler"] = dict(autoscaler)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_service(
    namespace: str,
    name: str,
    selector: Mapping[str, str],
    port: int,
    extra_ports: Sequence[tuple[str, int]] = (),
) -> None:
    """Check the arguments of :meth:`WorkloadRuntime.ensure_service` (every runtime does).

    Raises
    ------
    WorkloadError
        ``port`` is not 1-65535 or ``selector`` is empty.
    """
    if not 0 < port < 65536:
        raise WorkloadError(f"service {namespace}/{name}: port {port} is not in 1-65535")
    for port_name, extra in extra_ports:
        if not 0 < extra < 65536 or extra == port:
            raise WorkloadError(
                f"service {namespace}/{name}: port {port_name} ({extra}) is not in 1-65535 or "
                f"repeats the main port {port}"
            )
    if not selector:
        raise WorkloadError(f"service {namespace}/{name}: an empty selector matches nothing")


@runtime_checkable
class WorkloadRuntime(Protocol):
    """Runs the workers of feature resources (see the module docstring)."""

    @property
    def mode(self) -> RuntimeMode:
        """Which storage/credential rules worker specs for this runtime must follow."""
        ...

    async def ensure_worker(
        self,
        name: str,
        spec: WorkerSpec,
        *,
        replicas: int | None = None,
        credentials: Mapping[str, str] | None = None,
        autoscaler: Mapping[str, Any] | None = None,
    ) -> WorkerStatus:
        """Create the worker if missing, roll it when its spec hash changed; return its status.

        Parameters
        ----------
        name
            Worker name, unique in ``spec.owner.namespace``
            (:func:`sedna_gm.workloads.builder.worker_name`).
        spec
            What to run; ``spec.owner`` gives the namespace and the owner reference.
        replicas
            None: one job worker (a Pod / one process). A number: a service worker
            (a Deployment with that many replicas; the local runtime runs one process).
        credentials
            Secret environment for the local runtime (sent over the authenticated hub
            stream, never stored). Ignored on Kubernetes, where the spec's template carries
            ``secretKeyRef`` entries instead.
        autoscaler
            Service workers: the ``hpa`` of the spec (``minReplicas``, ``maxReplicas``,
            ``metrics``, ``behavior``), None without one. Kubernetes creates, updates or
            deletes the HorizontalPodAutoscaler ``hpa-<name>`` with the Deployment (it is part
            of the spec hash) and leaves the Deployment's replica count to it; the local
            runtime runs one process and ignores it (the controller says so).

        Raises
        ------
        WorkloadError
            The runtime refused the worker.
        """
        ...

    async def delete_worker(self, namespace: str, name: str) -> None:
        """Delete the worker (Pod or Deployment or Worker); no error when it is absent."""

    async def list_workers(self, owner: WorkerOwner) -> list[WorkerStatus]:
        """Every worker of ``owner`` (matched by the ``<kind>.sedna.io/name`` label), by name."""
        ...

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
        """Create or update a service in front of the workers matching ``selector``.

        ``port`` is the service's main port (the endpoint returned); ``extra_ports`` are
        further ``(name, port)`` pairs it exposes (the aggregator's bulk port), each to the
        same port number on the workers.
        """
        ...

    async def delete_service(self, namespace: str, name: str) -> None:
        """Delete the service; no error when it is absent."""

    async def observe_worker_state(
        self,
        node_name: str,
        state: hub_service_pb2.WorkerState,
        *,
        namespace: str | None = None,
    ) -> None:
        """Record a worker state reported by a node (local runtime; a no-op on Kubernetes)."""
