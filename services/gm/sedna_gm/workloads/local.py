"""The embedded-mode WorkloadRuntime: workers are processes run by the nodes' LCs.

Each worker becomes an internal ``Worker`` object (``runtime.sedna.io/v1``) sent to its node
with :meth:`NodeMessenger.upsert` (S3 keys travel in the upsert's ``credentials``, never in
the object); the LC runs it and reports ``WorkerState`` changes, which the controller manager
passes to :meth:`LocalWorkloadRuntime.observe_worker_state`. The objects and their last
reported state live in the GM's ResourceStore when one is given (a GM restart forgets
nothing), else in memory. Services resolve to the host of the node that runs the selected
worker (its LC agent address) or ``127.0.0.1``: workers bind on the host.

Placement (:mod:`.placement`): a template's ``nodeName`` is used as is. Without one, the
worker goes to a node whose labels (sent by its LC, plus ``kubernetes.io/hostname``) satisfy
the ``nodeSelector`` and the required node affinity: connected nodes first, then the
preferred-affinity score, then the node it already ran on, then the fewest unfinished
workers, then the name. The chosen node is written into the ``Worker`` object's
``spec.nodeName`` (annotation ``sedna.io/placement: scheduled``), so it stays put across
GM restarts and reconciles. When no node fits, the worker is kept ``Pending`` with a message
saying why for each node; it is placed as soon as a node fits: on the next
:meth:`~LocalWorkloadRuntime.ensure_worker` or :meth:`~LocalWorkloadRuntime.list_workers`,
when a node connects with a full resync (:meth:`~LocalWorkloadRuntime.desired_objects`), or
on :meth:`~LocalWorkloadRuntime.place_pending`. Nodes the GM has not heard from since it
started are no candidates: their labels are unknown.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.objects import OwnerRef, ResourceObject
from sedna.resources.wire import worker_phase_from_proto
from sedna.resources.worker import (
    WORKER_API_VERSION,
    WORKER_KIND,
    WorkerOwner,
    WorkerPhaseName,
    WorkerSpec,
)
from sedna_gm.core.ports import NodeDirectory, NodeMessenger
from sedna_gm.store.errors import NotFoundError, StoreError
from sedna_gm.store.port import ResourceStore
from sedna_gm.workloads.builder import owner_selector
from sedna_gm.workloads.placement import (
    HOSTNAME_LABEL,
    NodeCandidate,
    NodePlacement,
    choose_node,
    unschedulable_message,
)
from sedna_gm.workloads.port import (
    RuntimeMode,
    ServiceEndpoint,
    WorkerStatus,
    WorkloadError,
    check_service,
    spec_hash,
)

__all__ = [
    "PLACEMENT_ANNOTATION",
    "SPEC_HASH_ANNOTATION",
    "LocalWorkloadRuntime",
    "worker_status_of",
]

logger = logging.getLogger(__name__)

SPEC_HASH_ANNOTATION = "sedna.io/worker-spec-hash"
PLACEMENT_ANNOTATION = "sedna.io/placement"
"""How the Worker's node was chosen: ``nodeName`` (the template's) or ``scheduled``."""
_FINISHED = frozenset({WorkerPhaseName.SUCCEEDED.value, WorkerPhaseName.FAILED.value})
_REPLICAS_ANNOTATION = "sedna.io/worker-replicas"
_UNBOUND_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})


def worker_status_of(obj: ResourceObject) -> WorkerStatus:
    """The :class:`WorkerStatus` recorded on a ``Worker`` object.

    Its ``exit_code`` is the finished worker's, else how its process last ended
    (``status.lastState.exitCode``, as a Pod's ``lastState.terminated``), else None.
    """
    status = obj.status
    exit_code = status.get("exitCode")
    if exit_code is None:
        last = status.get("lastState")
        exit_code = last.get("exitCode") if isinstance(last, Mapping) else None
    try:
        phase = WorkerPhaseName(status.get("phase") or WorkerPhaseName.PENDING)
    except ValueError:
        phase = WorkerPhaseName.PENDING
    return WorkerStatus(
        name=obj.name,
        namespace=obj.namespace,
        node_name=str(obj.spec.get("nodeName", "")),
        phase=phase,
        restart_count=int(status.get("restartCount") or 0),
        exit_code=int(exit_code) if exit_code is not None else None,
        message=str(status.get("message", "")),
        spec_hash=obj.annotations.get(SPEC_HASH_ANNOTATION, ""),
        worker_type=str(obj.spec.get("workerType", "")),
        deleting=obj.deletion_timestamp is not None,
    )


class LocalWorkloadRuntime:
    """Runs workers as LC processes (see the module docstring).

    Parameters
    ----------
    messenger
        Delivers ``Worker`` objects to nodes (the hub).
    store
        Where ``Worker`` objects and their reported state persist; None keeps them in memory.
    nodes
        Known nodes, to resolve a service to the host of its worker's node.
    """

    def __init__(
        self,
        messenger: NodeMessenger,
        *,
        store: ResourceStore | None = None,
        nodes: NodeDirectory | None = None,
    ) -> None:
        self._messenger = messenger
        self._store = store
        self._nodes = nodes
        self._memory: dict[tuple[str, str], ResourceObject] = {}
        # Secrets stay in memory only: after a GM restart the controllers rebuild them.
        self._credentials: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = asyncio.Lock()

    @property
    def mode(self) -> RuntimeMode:
        """Always :attr:`RuntimeMode.LOCAL`."""
        return RuntimeMode.LOCAL

    # ------------------------------------------------------------------ records

    async def _get(self, namespace: str, name: str) -> ResourceObject | None:
        if self._store is None:
            obj = self._memory.get((namespace, name))
            return obj.clone() if obj else None
        try:
            return await self._store.get(WORKER_KIND, namespace, name)
        except NotFoundError:
            return None
        except StoreError as exc:
            raise WorkloadError(f"worker {namespace}/{name}: store failed: {exc}") from exc

    async def _put(self, obj: ResourceObject, *, exists: bool) -> None:
        if self._store is None:
            self._memory[(obj.namespace, obj.name)] = obj.clone()
            return
        obj = obj.clone()
        obj.resource_version = ""  # last write wins: this runtime is the only writer
        try:
            if exists:
                await self._store.update(obj)
            else:
                await self._store.create(obj)
            await self._store.update_status(obj)
        except StoreError as exc:
            raise WorkloadError(f"worker {obj.namespace}/{obj.name}: store failed: {exc}") from exc

    async def _drop(self, namespace: str, name: str) -> None:
        if self._store is None:
            self._memory.pop((namespace, name), None)
            return
        try:
            await self._store.delete(WORKER_KIND, namespace, name)
        except NotFoundError:
            pass
        except StoreError as exc:
            raise WorkloadError(f"worker {namespace}/{name}: store failed: {exc}") from exc

    async def _list(
        self, namespace: str | None, selector: Mapping[str, str]
    ) -> list[ResourceObject]:
        if self._store is None:
            items = [o.clone() for o in self._memory.values()]
        else:
            try:
                items = (await self._store.list(WORKER_KIND, namespace, dict(selector))).items
            except StoreError as exc:
                raise WorkloadError(f"listing workers failed: {exc}") from exc
        return sorted(
            (
                o
                for o in items
                if (namespace is None or o.namespace == namespace)
                and all(o.labels.get(k) == v for k, v in selector.items())
            ),
            key=lambda o: (o.namespace, o.name),
        )

    # ------------------------------------------------------------------ port

    async def ensure_worker(
        self,
        name: str,
        spec: WorkerSpec,
        *,
        replicas: int | None = None,
        credentials: Mapping[str, str] | None = None,
        autoscaler: Mapping[str, Any] | None = None,
    ) -> WorkerStatus:
        """Place the worker, send it to its node unless an identical one was sent; its status.

        ``replicas`` is recorded but the node runs one process (services scale on Kubernetes);
        an ``autoscaler`` cannot scale a process: it only counts in the spec hash (controllers
        tell the user it is ignored, see the joint inference controller).
        A worker without ``spec.nodeName`` is placed by its template's ``nodeSelector`` and
        node affinity (see the module docstring); one no node fits is returned ``Pending``
        with the reason as its message, and placed by a later call once a node fits.

        Raises
        ------
        WorkloadError
            ``spec.command`` is empty, the placement fields are malformed
            (:class:`~sedna_gm.workloads.placement.PlacementError`), ``spec.nodeName`` is
            empty and this runtime has no node directory, or the store failed.
        """
        namespace = spec.owner.namespace
        if not spec.command:
            raise WorkloadError(f"worker {namespace}/{name}: spec.command is required")
        placement = NodePlacement.from_pod_spec(_pod_spec(spec.template), "spec.template.spec")
        if not spec.node_name and self._nodes is None:
            raise WorkloadError(
                f"worker {namespace}/{name}: spec.nodeName is required in the local mode "
                "when the runtime has no node directory to place it by nodeSelector/affinity"
            )
        hash_ = spec_hash(spec, replicas, autoscaler)
        async with self._lock:
            if credentials is not None:
                self._credentials[(namespace, name)] = dict(credentials)
            current = await self._get(namespace, name)
            if current is not None and current.annotations.get(SPEC_HASH_ANNOTATION) == hash_:
                if not _node_of(current) and current.deletion_timestamp is None:
                    current = await self._schedule(current.clone(), placement, current)
                return worker_status_of(current)
            obj = self._worker_object(name, spec, hash_, replicas)
            if spec.node_name:
                obj.annotations[PLACEMENT_ANNOTATION] = "nodeName"
                await self._commit(obj, current)
                return worker_status_of(obj)
            return worker_status_of(await self._schedule(obj, placement, current))

    async def _commit(
        self, obj: ResourceObject, current: ResourceObject | None, *, send: bool = True
    ) -> None:
        """Store ``obj`` (replacing ``current``); move it off its old node onto its new one."""
        old_node = _node_of(current) if current is not None else ""
        node = _node_of(obj)
        if current is not None and old_node and old_node != node:
            await self._messenger.remove(old_node, current)
        await self._put(obj, exists=current is not None)
        if node and send:
            await self._messenger.upsert(
                node, obj, self._credentials.get((obj.namespace, obj.name), {})
            )

    async def _schedule(
        self,
        obj: ResourceObject,
        placement: NodePlacement,
        current: ResourceObject | None,
        *,
        resyncing: str = "",
    ) -> ResourceObject:
        """Choose a node for ``obj`` (no ``nodeName``), record and send it; or record why not.

        ``current`` is the stored version (None for a new worker): a rolled worker prefers
        the node it ran on. ``resyncing`` is a node whose full resync is being built: it gets
        the object in the resync, not as an extra event.
        """
        previous = _node_of(current) if current is not None else ""
        candidates = await self._candidates(exclude=(obj.namespace, obj.name))
        node = choose_node(placement, candidates, current=previous)
        obj.annotations[PLACEMENT_ANNOTATION] = "scheduled"
        obj.spec["nodeName"] = node or ""
        obj.status = {"phase": WorkerPhaseName.PENDING.value, "restartCount": 0}
        if node is None:
            message = unschedulable_message(placement, candidates)
            obj.status["message"] = message
            unchanged = (
                current is not None
                and not previous
                and current.status.get("message") == message
                and current.annotations == obj.annotations
            )
            if not unchanged:
                await self._commit(obj, current)
                logger.info("worker %s/%s not placed: %s", obj.namespace, obj.name, message)
            return obj
        await self._commit(obj, current, send=node != resyncing)
        logger.info(
            "worker %s/%s placed on node %s (%s)",
            obj.namespace,
            obj.name,
            node,
            placement.describe(),
        )
        return obj

    async def _candidates(self, exclude: tuple[str, str]) -> list[NodeCandidate]:
        """Nodes heard from since the GM started, with their unfinished worker counts."""
        if self._nodes is None:
            return []
        load: Counter[str] = Counter(
            _node_of(o)
            for o in await self._list(None, {})
            if (o.namespace, o.name) != exclude
            and _node_of(o)
            and o.status.get("phase") not in _FINISHED
        )
        return [
            NodeCandidate(
                name=info.name,
                labels={HOSTNAME_LABEL: info.name, **info.labels},
                connected=info.connected,
                workers=load[info.name],
            )
            for info in self._nodes.list_nodes()
            if info.connected or info.last_seen is not None
        ]

    async def place_pending(self, owner: WorkerOwner | None = None, *, resyncing: str = "") -> int:
        """Try to place every worker (of ``owner``) that waits for a matching node.

        Call it when nodes connect or change labels; :meth:`list_workers` and
        :meth:`desired_objects` call it too.

        Parameters
        ----------
        owner
            Only this resource's workers; None: every worker.
        resyncing
            A node whose full resync is being built (see :meth:`desired_objects`).

        Returns
        -------
        int
            How many workers were placed.

        Raises
        ------
        WorkloadError
            The store failed.
        """
        if self._nodes is None:
            return 0
        if owner is not None:
            namespace: str | None = owner.namespace
            selector = owner_selector(owner.kind, owner.name)
        else:
            namespace, selector = None, {}
        placed = 0
        async with self._lock:
            for obj in await self._list(namespace, selector):
                if _node_of(obj) or obj.deletion_timestamp is not None:
                    continue
                try:
                    placement = NodePlacement.from_pod_spec(
                        _pod_spec(obj.spec.get("template")), "spec.template.spec"
                    )
                except WorkloadError as exc:  # validated when it was ensured; be safe
                    logger.warning("worker %s/%s: %s", obj.namespace, obj.name, exc)
                    continue
                done = await self._schedule(obj.clone(), placement, obj, resyncing=resyncing)
                placed += bool(_node_of(done))
        return placed

    def _worker_object(
        self, name: str, spec: WorkerSpec, hash_: str, replicas: int | None
    ) -> ResourceObject:
        annotations = {SPEC_HASH_ANNOTATION: hash_}
        if replicas is not None:
            annotations[_REPLICAS_ANNOTATION] = str(replicas)
        owner = spec.owner
        return ResourceObject(
            kind=WORKER_KIND,
            api_version=WORKER_API_VERSION,
            name=name,
            namespace=owner.namespace,
            labels=dict(spec.labels),
            annotations=annotations,
            owner_references=[
                OwnerRef(
                    api_version=owner.api_version,
                    kind=owner.kind,
                    name=owner.name,
                    uid=owner.uid,
                    controller=True,
                )
            ],
            spec=spec.model_dump(by_alias=True, mode="json"),
            status={"phase": WorkerPhaseName.PENDING.value, "restartCount": 0},
        )

    async def delete_worker(self, namespace: str, name: str) -> None:
        """Remove the worker from its node and forget it; no error when absent."""
        async with self._lock:
            current = await self._get(namespace, name)
            if current is None:
                return
            node = str(current.spec.get("nodeName", ""))
            if node:
                await self._messenger.remove(node, current)
            await self._drop(namespace, name)
            self._credentials.pop((namespace, name), None)

    async def list_workers(self, owner: WorkerOwner) -> list[WorkerStatus]:
        """Workers labelled for ``owner`` in its namespace, sorted by name.

        Workers of ``owner`` still waiting for a node are placed first when one fits now.
        """
        await self.place_pending(owner)
        selector = owner_selector(owner.kind, owner.name)
        return [worker_status_of(o) for o in await self._list(owner.namespace, selector)]

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
        """Resolve to the host of the selected worker's node, else ``127.0.0.1``.

        Raises
        ------
        WorkloadError
            ``port`` is not 1-65535 or ``selector`` is empty.
        """
        check_service(namespace, name, selector, port, extra_ports)
        host = "127.0.0.1"
        if self._nodes is not None:
            nodes = {_node_of(o) for o in await self._list(namespace, selector)} - {""}
            if len(nodes) == 1:
                info = self._nodes.get_node(nodes.pop())
                if info is not None and info.agent_address:
                    agent_host = info.agent_address.rsplit(":", 1)[0]
                    if agent_host not in _UNBOUND_HOSTS:
                        host = agent_host.strip("[]")
        return ServiceEndpoint(host, port)

    async def delete_service(self, namespace: str, name: str) -> None:
        """Nothing to delete: local services are plain host ports."""

    async def observe_worker_state(
        self,
        node_name: str,
        state: hub_service_pb2.WorkerState,
        *,
        namespace: str | None = None,
    ) -> None:
        """Record a node's report; reports for unknown workers or from another node are ignored.

        The ``Worker``'s status becomes ``phase``, ``restartCount``, ``message``, ``exitCode``
        (once finished) and ``lastState: {exitCode, reason}`` (how its process last ended,
        kept while it runs again; absent until it first ends).

        Raises
        ------
        WorkloadError
            The store failed (the hub will resend the report).
        """
        async with self._lock:
            matches = [
                o
                for o in await self._list(namespace, {})
                if o.name == state.worker_name and o.spec.get("nodeName") == node_name
            ]
            if len(matches) != 1:
                logger.info(
                    "ignoring state of worker %r from node %r: %s",
                    state.worker_name,
                    node_name,
                    "unknown worker" if not matches else "ambiguous name; give a namespace",
                )
                return
            obj = matches[0]
            phase = worker_phase_from_proto(state.phase)
            if phase is None:
                logger.info("ignoring worker %r state without a phase", state.worker_name)
                return
            obj.status = {
                "phase": phase.value,
                "restartCount": int(state.restart_count),
                "message": state.message,
            }
            if phase in (WorkerPhaseName.SUCCEEDED, WorkerPhaseName.FAILED):
                obj.status["exitCode"] = int(state.exit_code)
            if state.last_termination_reason:  # it has ended at least once
                obj.status["lastState"] = {
                    "exitCode": int(state.last_exit_code),
                    "reason": state.last_termination_reason,
                }
            await self._put_status(obj)

    async def _put_status(self, obj: ResourceObject) -> None:
        if self._store is None:
            self._memory[(obj.namespace, obj.name)] = obj.clone()
            return
        obj.resource_version = ""
        try:
            await self._store.update_status(obj)
        except NotFoundError:
            pass  # deleted meanwhile
        except StoreError as exc:
            raise WorkloadError(f"worker {obj.namespace}/{obj.name}: store failed: {exc}") from exc

    async def desired_objects(
        self, node_name: str
    ) -> Sequence[tuple[ResourceObject, Mapping[str, str]]]:
        """Every ``Worker`` on ``node_name`` with its credentials (for the hub's resync).

        The hub asks when a node connects with a full resync (its first connection since
        the GM started, or after a lost session): waiting workers are placed first, so a
        node that fits them gets them in this resync.
        """
        await self.place_pending(resyncing=node_name)
        return [
            (o, dict(self._credentials.get((o.namespace, o.name), {})))
            for o in await self._list(None, {})
            if o.spec.get("nodeName") == node_name
        ]


def _node_of(obj: ResourceObject) -> str:
    return str(obj.spec.get("nodeName") or "")


def _pod_spec(template: Any) -> Mapping[str, Any]:
    spec = template.get("spec") if isinstance(template, Mapping) else None
    return spec if isinstance(spec, Mapping) else {}
