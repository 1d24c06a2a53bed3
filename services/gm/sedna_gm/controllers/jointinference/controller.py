"""The JointInferenceService controller: a cloud and an edge worker, their Service and status.

Every reconcile of a service:

1. validates the spec, holds the ``sedna.io/cleanup`` finalizer and sets ``startTime``;
2. resolves both Models (``spec.cloudWorker.model.name``, ``spec.edgeWorker.model.name``) and
   the S3 Secrets they name; a missing one is ``ModelsReady=False`` (``ModelNotFound``), and
   the service is reconciled again when the Model appears (the controller watches Models);
3. ensures the cloud worker (a Deployment, or a process on its node in the local mode) and the
   Service ``<name>-cloud`` in front of it on the big-model port (5000 on Kubernetes; in the
   local mode a free port per service, see :mod:`sedna_gm.controllers.ports`);
4. ensures the edge worker with ``BIG_MODEL_IP``/``BIG_MODEL_PORT`` pointing at that Service
   (in the local mode: the host of the cloud worker's node; the edge worker waits until the
   cloud worker has a registered node); on Kubernetes a worker with an ``hpa`` gets its
   HorizontalPodAutoscaler ``hpa-<deploymentName>`` with its Deployment (created, replaced
   or deleted as the ``hpa`` comes, changes or goes; the HPA owns the replica count), while
   the local runtime runs one process and says in the worker's condition (and a
   ``HPAIgnored`` warning) that the ``hpa`` is ignored;
5. writes phase, conditions (:mod:`.status`), ``active``/``failed`` and ``observedGeneration``.

A changed worker spec (template, Model URL or format, HEM parameters, the cloud address) rolls
that worker (:func:`~sedna_gm.workloads.lifecycle.plan_workers`); a worker that failed is recreated
by the shared lifecycle rules. Deleting the service removes both workers and the Service before
the finalizer is released. Edge reports (``kind: inference``) become ``status.metrics``
(``ownerInfo`` without ``startTime``/``updateTime``) and Prometheus gauges (:mod:`.metrics`).

Worker changes reach the controller through the ``Worker`` informer in the local mode; on
Kubernetes the GM does not watch Deployments, so each service is re-checked every
``poll_interval`` seconds.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from google.protobuf.json_format import MessageToDict
from prometheus_client import CollectorRegistry

from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.objects import ObjectKey, ResourceObject
from sedna.resources.worker import WorkerOwner
from sedna_gm.controllers.common import hold_finalizer, report_has_payload, validate_spec
from sedna_gm.controllers.conditions import find_condition, rfc3339, set_condition, utcnow
from sedna_gm.controllers.controller import Controller, KeyMapper, ReconcileResult
from sedna_gm.controllers.events import EventRecorder
from sedna_gm.controllers.informer import Informer
from sedna_gm.controllers.jointinference.metrics import EdgeMetrics
from sedna_gm.controllers.jointinference.models import MODEL_KIND, model_name, resolve_models
from sedna_gm.controllers.jointinference.status import (
    CONDITION_READY,
    RoleState,
    ServiceStatus,
    classify,
    invalid_status,
    models_status,
    service_status,
)
from sedna_gm.controllers.jointinference.workers import (
    BIG_MODEL_BIND_PORT_ENV,
    CLOUD,
    DEFAULT_BIG_MODEL_PORT,
    EDGE,
    ResolvedModel,
    build_cloud_worker,
    build_edge_worker,
    explicit_port,
    hpa_of,
    worker_name_of,
)
from sedna_gm.controllers.manager import Manager
from sedna_gm.controllers.model import metrics_from_result
from sedna_gm.controllers.ports import PORT_RANGE, WorkerPorts, port_is_free
from sedna_gm.controllers.reports import ReportRouter
from sedna_gm.controllers.status import update_status
from sedna_gm.controllers.workers_common import (
    SpecError,
    add_worker_controller,
    finalize_workers,
    plan,
    record_action,
    remove_workers,
    spec_errors,
    worker_informer,
)
from sedna_gm.core.ports import NodeDirectory
from sedna_gm.store.errors import NotFoundError
from sedna_gm.store.port import ResourceStore
from sedna_gm.workloads.builder import (
    WorkerEnvSettings,
    label_prefix,
    owner_of,
    owner_selector,
    service_name,
)
from sedna_gm.workloads.lifecycle import (
    DesiredWorker,
    RestartRules,
    RestartTracker,
    WorkerPlan,
    apply_plan,
)
from sedna_gm.workloads.port import (
    RuntimeMode,
    ServiceEndpoint,
    WorkerStatus,
    WorkloadError,
    WorkloadRuntime,
)
from sedna_gm.workloads.storage import SecretSource

__all__ = [
    "CONTROLLER_NAME",
    "KIND",
    "JointInferenceController",
    "setup_joint_inference_controller",
]

_log = logging.getLogger(__name__)

KIND = "JointInferenceService"
CONTROLLER_NAME = "jointinferenceservice"
_SOURCE = "jointinferenceservice"
_DROPPED_INFO = ("startTime", "updateTime")


class JointInferenceController:
    """Reconciler and report handler for JointInferenceServices.

    Parameters
    ----------
    store
        Where the services live (status and finalizer writes).
    informer
        The JointInferenceService informer.
    models
        The Model informer.
    runtime
        Runs the workers (Kubernetes or local).
    recorder
        Where events go.
    env_settings
        ``LC_SERVER``/``KB_SERVER`` for the workers' environment.
    nodes
        Known nodes (local mode: a worker on an unregistered node is ``NodeNotFound``).
    secrets
        Where Models' ``credentialName`` Secrets are read.
    workers
        The ``Worker`` informer (local mode), to find the port a cloud worker already has.
    metrics
        The edge counters' Prometheus gauges (None: none).
    poll_interval
        Kubernetes: seconds between re-checks of a service's Deployments (not watched).
    retry_interval
        Seconds between re-checks while a Secret or a node is missing, or (local mode) while
        a worker does not run.
    crash_loop_restarts
        Restarts after which a worker that does not run counts as failed.
    restart_rules
        How often a failed worker is recreated.
    port_range, port_probe
        Local mode: where big-model ports come from and how a free one is recognised.
    clock
        Time source for conditions and ``startTime``.
    """

    def __init__(
        self,
        store: ResourceStore,
        informer: Informer,
        models: Informer,
        runtime: WorkloadRuntime,
        recorder: EventRecorder,
        *,
        env_settings: WorkerEnvSettings | None = None,
        nodes: NodeDirectory | None = None,
        secrets: SecretSource | None = None,
        workers: Informer | None = None,
        metrics: EdgeMetrics | None = None,
        poll_interval: float = 10.0,
        retry_interval: float = 30.0,
        crash_loop_restarts: int = 3,
        restart_rules: RestartRules | None = None,
        port_range: tuple[int, int] = PORT_RANGE,
        port_probe: Callable[[int], bool] = port_is_free,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.informer = informer
        self.models = models
        self.runtime = runtime
        self.recorder = recorder
        self.env_settings = env_settings or WorkerEnvSettings()
        self.nodes = nodes
        self.secrets = secrets
        self.workers = workers
        self.metrics = metrics
        self.poll_interval = poll_interval
        self.retry_interval = retry_interval
        self.crash_loop_restarts = crash_loop_restarts
        self.restart_rules = restart_rules or RestartRules()
        self._clock = clock
        self._tracker = RestartTracker()
        self._hpa_noted: dict[ObjectKey, int] = {}  # local mode: generation last warned about
        self.ports = WorkerPorts(
            workers,
            env_name=BIG_MODEL_BIND_PORT_ENV,
            worker_type=CLOUD,
            worker_name=lambda name: worker_name_of(name, CLOUD),
            port_range=port_range,
            probe=port_probe,
        )

    @property
    def local(self) -> bool:
        """Whether workers are local processes (placement and ports are the GM's business)."""
        return self.runtime.mode is RuntimeMode.LOCAL

    # --- watches -----------------------------------------------------------------------------

    def services_using_model(self, model: ResourceObject) -> list[ObjectKey]:
        """The services whose cloud or edge worker uses ``model`` (for the Model watch)."""
        return [
            obj.key
            for obj in self.informer.list()
            if obj.namespace == model.namespace
            and model.name in (model_name(obj, CLOUD), model_name(obj, EDGE))
        ]

    # --- reconcile ---------------------------------------------------------------------------

    async def reconcile(self, key: ObjectKey) -> ReconcileResult:
        """Bring the service's workers, Service and status in line with its spec."""
        obj = self.informer.get(key)
        if obj is None:
            # Gone without our finalizer (or already finalized): nothing of it may stay.
            await self._remove_everything(key, None)
            return ReconcileResult()
        if obj.deletion_timestamp is not None:
            await self._finalize(obj)
            return ReconcileResult()
        obj = await hold_finalizer(self.store, obj)

        _, error = validate_spec(obj)
        if error:
            await self._write(obj, invalid_status(error))
            return ReconcileResult()

        resolved, problems = await resolve_models(obj, self.models, self.secrets)
        if problems:
            await self._write(obj, models_status(problems))
            secret_trouble = any(p.reason != "ModelNotFound" for p in problems)
            return ReconcileResult(requeue_after=self.retry_interval if secret_trouble else None)

        try:
            cloud, edge, requeue = await self._ensure_workers(obj, resolved)
        except SpecError as exc:
            await self._write(obj, invalid_status(str(exc)))
            return ReconcileResult()
        except WorkloadError as exc:
            self.recorder.record(obj, "Warning", "RuntimeError", str(exc), source=_SOURCE)
            raise
        models = ", ".join(sorted({f"{obj.namespace}/{resolved[r].name}" for r in (CLOUD, EDGE)}))
        result = service_status(cloud, edge, models_message=f"Model {models} found")
        await self._write(obj, result)
        return ReconcileResult(requeue_after=self._next_check(result, requeue))

    def _next_check(self, result: ServiceStatus, requeue: float | None) -> float | None:
        waits = [requeue] if requeue is not None else []
        if self.workers is None:  # worker changes are not watched: look again
            waits.append(self.poll_interval)
        elif result.phase != "Running":
            waits.append(self.retry_interval)
        return min(waits) if waits else None

    # --- workers -----------------------------------------------------------------------------

    def _node_known(self, node: str) -> bool:
        return self.nodes is None or self.nodes.get_node(node) is not None

    async def _ensure_workers(
        self, obj: ResourceObject, models: Mapping[str, ResolvedModel]
    ) -> tuple[RoleState, RoleState, float | None]:
        owner = owner_of(obj)
        ns = obj.namespace
        cloud_name, edge_name = worker_name_of(obj.name, CLOUD), worker_name_of(obj.name, EDGE)
        port = self._big_model_port(obj)
        mode, settings = self.runtime.mode, self.env_settings
        with spec_errors():
            cloud_want = build_cloud_worker(
                obj, models[CLOUD], mode=mode, settings=settings, port=port
            )
            # Check the edge template too before anything runs (its address comes later).
            placeholder = ServiceEndpoint("0.0.0.0", port)
            build_edge_worker(obj, models[EDGE], mode=mode, settings=settings, cloud=placeholder)
        observed = await self.runtime.list_workers(owner)
        cloud_plan = self._plan(
            ns, cloud_name, cloud_want, [s for s in observed if s.name == cloud_name]
        )
        cloud_status = await self._apply(obj, CLOUD, cloud_name, cloud_plan)
        selector = {**owner_selector(KIND, obj.name), f"{label_prefix(KIND)}/worker-type": CLOUD}
        endpoint = await self.runtime.ensure_service(
            ns, service_name(obj.name, CLOUD), selector, port, owner=owner
        )
        node_known = self._node_known if self.local else None
        cloud = classify(
            CLOUD,
            cloud_name,
            cloud_status,
            gave_up=cloud_plan.summary.failed > 0,
            crash_loop_restarts=self.crash_loop_restarts,
            node_known=node_known,
            template_node=cloud_want.spec.node_name,
        )

        others = [s for s in observed if s.name != cloud_name]
        waiting = self._cloud_unreachable(cloud_status)
        edge_want: DesiredWorker | None = None
        if not waiting:
            with spec_errors():
                edge_want = build_edge_worker(
                    obj, models[EDGE], mode=mode, settings=settings, cloud=endpoint
                )
            edge_plan = self._plan(ns, edge_name, edge_want, others)
        else:
            # Keep an existing edge worker as it is; remove only strays.
            edge_plan = self._plan(ns, None, None, [s for s in others if s.name != edge_name])
        edge_status = await self._apply(obj, EDGE, edge_name, edge_plan)
        if edge_status is None:
            edge_status = next((s for s in others if s.name == edge_name), None)
        edge = classify(
            EDGE,
            edge_name,
            edge_status,
            gave_up=edge_plan.summary.failed > 0,
            crash_loop_restarts=self.crash_loop_restarts,
            node_known=node_known,
            template_node=edge_want.spec.node_name if edge_want is not None else "",
            waiting=waiting,
        )
        waits = [p.requeue_after_s for p in (cloud_plan, edge_plan) if p.requeue_after_s]
        if self.local:
            cloud, edge = self._hpa_ignored(obj, cloud), self._hpa_ignored(obj, edge)
        return cloud, edge, min(waits) if waits else None

    def _hpa_ignored(self, obj: ResourceObject, state: RoleState) -> RoleState:
        """Local mode: ``state`` with a note that its ``hpa`` is ignored (warned once per
        generation); unchanged when the worker has no ``hpa``."""
        hpa = hpa_of(obj, state.role)
        if hpa is None:
            return state
        low, high = hpa.get("minReplicas", 1), hpa.get("maxReplicas")
        note = (
            f"hpa is ignored by the local runtime: it runs one process, "
            f"not {low} to {high} replicas"
        )
        if self._hpa_noted.get(obj.key) != obj.generation:
            self._hpa_noted[obj.key] = obj.generation
            roles = [r for r in (CLOUD, EDGE) if hpa_of(obj, r) is not None]
            workers = " and ".join(f"{r} worker" for r in roles)
            message = f"{workers}: hpa is ignored by the local runtime (one process each)"
            self.recorder.record(obj, "Warning", "HPAIgnored", message, source=_SOURCE)
        return dataclasses.replace(state, message=f"{state.message}; {note}")

    def _big_model_port(self, obj: ResourceObject) -> int:
        """The cloud worker's port: pinned by its template, 5000 on Kubernetes, else allocated."""
        with spec_errors():
            pinned = explicit_port(obj)
            if pinned is not None:
                return pinned
            return self.ports.port_for(obj) if self.local else DEFAULT_BIG_MODEL_PORT

    def _cloud_unreachable(self, cloud: WorkerStatus | None) -> str:
        """Local mode: why the cloud worker's address is not known yet ("" when it is)."""
        if not self.local:
            return ""
        node = cloud.node_name if cloud is not None else ""
        if not node:
            return "waiting for the cloud worker to be placed on a node (BIG_MODEL_IP)"
        if not self._node_known(node):
            return f"waiting for the cloud worker's node {node!r} to register (BIG_MODEL_IP)"
        return ""

    def _plan(
        self,
        namespace: str,
        name: str | None,
        want: DesiredWorker | None,
        observed: list[WorkerStatus],
    ) -> WorkerPlan:
        desired = {name: want} if name is not None and want is not None else {}
        return plan(namespace, desired, observed, tracker=self._tracker, rules=self.restart_rules)

    async def _apply(
        self, obj: ResourceObject, role: str, name: str, plan: WorkerPlan
    ) -> WorkerStatus | None:
        """Run the plan, record an event per action; the worker's status afterwards."""
        results = iter(await apply_plan(self.runtime, plan))
        status = plan.summary.workers.get(name)
        for action in plan.actions:
            if action.desired is not None:
                after = next(results)
                if action.name == name:
                    status = after
            what = f"{role} worker {action.name}"
            record_action(
                self.recorder, obj, action, what, rolled="rolled", part_of="service", source=_SOURCE
            )
        return status

    # --- status ------------------------------------------------------------------------------

    async def _write(self, obj: ResourceObject, result: ServiceStatus) -> None:
        now = self._clock()
        generation = obj.generation
        before: list[tuple[Any, ...]] = []

        def mutate(fresh: ResourceObject) -> None:
            status = fresh.status
            ready = find_condition(status, CONDITION_READY) or {}
            # The stored state this write replaces (mutate runs again after a conflict).
            before[:] = [(status.get("phase"), ready.get("reason"), ready.get("message"))]
            for type_, condition_status, reason, message in result.conditions:
                set_condition(
                    status,
                    type_,
                    condition_status,
                    reason,
                    message,
                    observed_generation=generation,
                    now=now,
                )
            if not status.get("startTime"):
                status["startTime"] = rfc3339(now)
            status["phase"] = result.phase
            if result.active is not None:
                status["active"] = result.active
            if result.failed is not None:
                status["failed"] = result.failed
            status["observedGeneration"] = generation

        try:
            await update_status(self.store, obj.key, mutate, current=obj)
        except NotFoundError:
            _log.debug("%s vanished before its status was written", obj.key)
            return
        self._record_transition(obj, before[0], result)

    def _record_transition(
        self, obj: ResourceObject, old: tuple[Any, ...], result: ServiceStatus
    ) -> None:
        """Events for a changed phase or Ready reason (Running, failures, missing things)."""
        ready = next(c for c in result.conditions if c[0] == CONDITION_READY)
        _, _, reason, message = ready
        if old == (result.phase, reason, message):
            return
        if result.phase == "Running":
            if old[0] != "Running":
                self.recorder.record(obj, "Normal", "Running", message, source=_SOURCE)
        elif result.phase == "Failed" or reason not in ("CloudNotReady", "EdgeNotReady"):
            self.recorder.record(obj, "Warning", reason, message, source=_SOURCE)

    # --- deletion ----------------------------------------------------------------------------

    async def _finalize(self, obj: ResourceObject) -> None:
        await finalize_workers(
            self.store, self.recorder, obj, self._remove_everything, source=_SOURCE
        )

    async def _remove_everything(self, key: ObjectKey, owner: WorkerOwner | None) -> None:
        await remove_workers(self.runtime, self._tracker, key, owner, kind=KIND, service_role=CLOUD)
        self.ports.forget(key)
        self._hpa_noted.pop(key, None)
        if self.metrics is not None:
            self.metrics.forget(key)

    # --- reports -----------------------------------------------------------------------------

    async def handle_owner_report(
        self, node_name: str, owner: ObjectKey, report: hub_service_pb2.NodeReport
    ) -> None:
        """Copy an edge worker's counters (``ownerInfo``) into ``status.metrics``.

        Raises
        ------
        NotFoundError
            The service does not exist (the router drops the report).
        """
        if not report_has_payload(report, "worker", node_name, owner):
            return
        worker = report.worker
        if worker.kind not in ("", "inference"):
            _log.debug("%s report about %s from node %s ignored", worker.kind, owner, node_name)
            return
        info = MessageToDict(worker.owner_info)
        counters = {k: v for k, v in info.items() if k not in _DROPPED_INFO}
        if not counters:
            return
        metrics = metrics_from_result({"metrics": counters})

        def mutate(obj: ResourceObject) -> None:
            obj.status["metrics"] = metrics

        # Read fresh: reports arrive faster than the informer catches up.
        await update_status(self.store, owner, mutate)
        if self.metrics is not None:
            self.metrics.observe(owner, metrics)


def setup_joint_inference_controller(
    manager: Manager,
    router: ReportRouter,
    *,
    runtime: WorkloadRuntime,
    recorder: EventRecorder,
    env_settings: WorkerEnvSettings | None = None,
    nodes: NodeDirectory | None = None,
    secrets: SecretSource | None = None,
    registry: CollectorRegistry | None = None,
    workers: int = 1,
    watch_workers: bool | None = None,
    **options: Any,
) -> tuple[JointInferenceController, Controller]:
    """Build the controller and plug it into the manager and the report router.

    It watches JointInferenceServices, the Models they use and, with ``watch_workers``
    (default: the local runtime, whose ``Worker`` objects live in the store), their workers;
    without that watch each service is re-checked every ``poll_interval``. ``options`` go to
    :class:`JointInferenceController` (``poll_interval``, ``retry_interval``,
    ``crash_loop_restarts``, ``restart_rules``, ``port_range``, ``port_probe``).

    Returns
    -------
    tuple
        The reconciler and its :class:`Controller`.
    """
    informer = worker_informer(manager, runtime, watch_workers)
    reconciler = JointInferenceController(
        manager.store,
        manager.informer(KIND),
        manager.informer(MODEL_KIND),
        runtime,
        recorder,
        env_settings=env_settings,
        nodes=nodes,
        secrets=secrets,
        workers=informer,
        metrics=EdgeMetrics(registry or CollectorRegistry()),
        **options,
    )
    secondary: dict[str, KeyMapper] = {MODEL_KIND: reconciler.services_using_model}
    controller = add_worker_controller(
        manager,
        router,
        reconciler,
        name=CONTROLLER_NAME,
        kind=KIND,
        secondary=secondary,
        watch_workers=informer is not None,
        workers=workers,
    )
    return reconciler, controller
