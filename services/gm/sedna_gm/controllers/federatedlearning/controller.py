"""The FederatedLearningJob controller: aggregator, its Service, trainers and status.

Every reconcile of a job:

1. validates the spec, holds the ``sedna.io/cleanup`` finalizer and sets ``startTime``;
   a job whose ``Complete`` or ``Failed`` condition is True for its generation is done
   (upstream: terminal) and is left alone until its spec changes;
2. resolves the aggregation Model, ``pretrainedModel``, every trainer's Dataset and the
   Secrets they name (:mod:`.resources`); a missing one is ``ResourcesReady=False`` naming it,
   and the job is reconciled again when the Model or Dataset appears (both are watched);
3. ensures the aggregation worker (a Pod; locally a process on its node with a port from
   :class:`~sedna_gm.controllers.ports.WorkerPorts`) and the Service
   ``<name>-aggregation`` on 7363 in front of it;
4. ensures one training worker per ``spec.trainingWorkers`` entry on its Dataset's node with
   ``AGG_IP``/``AGG_PORT`` pointing at that Service (locally: the host of the aggregator's
   node; trainers wait until the aggregator has a registered node);
5. writes phase, conditions (:mod:`.status`), ``active``/``succeeded``/``failed``,
   ``completionTime`` and ``observedGeneration``.

Failed workers are recreated by the shared lifecycle rules (``OnFailure``); one that failed
for good fails the job with a condition naming it. Trainer reports (``kind: train``) set
``status.currentRound``, ``status.sampleCounts`` (per node) and the ``Training`` message;
the first result's metrics of any worker report go to the aggregation Model's
``status.metrics``. Deleting the job removes its workers and the Service before the finalizer
is released.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from google.protobuf.json_format import MessageToDict

from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.objects import ObjectKey, ResourceObject
from sedna.resources.worker import WorkerOwner
from sedna_gm.controllers.common import hold_finalizer, report_has_payload, validate_spec
from sedna_gm.controllers.conditions import find_condition, rfc3339, set_condition, utcnow
from sedna_gm.controllers.controller import Controller, KeyMapper, ReconcileResult
from sedna_gm.controllers.events import EventRecorder
from sedna_gm.controllers.federatedlearning.resources import (
    DATASET_KIND,
    aggregation_model_name,
    pretrained_model_name,
    resolve_inputs,
)
from sedna_gm.controllers.federatedlearning.status import (
    CONDITION_TRAINING,
    JobStatus,
    invalid_status,
    is_finished,
    job_status,
    merge_summaries,
    resources_status,
)
from sedna_gm.controllers.federatedlearning.workers import (
    AGG_BIND_PORT_ENV,
    AGGREGATION,
    DEFAULT_AGG_PORT,
    TRAIN,
    JobInputs,
    aggregator_bulk_port,
    aggregator_name,
    build_aggregator,
    build_trainer,
    dataset_names,
    explicit_agg_port,
    trainer_name,
)
from sedna_gm.controllers.informer import Informer
from sedna_gm.controllers.jointinference.models import MODEL_KIND
from sedna_gm.controllers.manager import Manager
from sedna_gm.controllers.model import metrics_from_result, set_model_metrics
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
    "FederatedLearningController",
    "setup_federated_learning_controller",
]

_log = logging.getLogger(__name__)

KIND = "FederatedLearningJob"
CONTROLLER_NAME = "federatedlearningjob"
_SOURCE = "federatedlearningjob"


class FederatedLearningController:
    """Reconciler and report handler for FederatedLearningJobs.

    Parameters
    ----------
    store
        Where the jobs live (status and finalizer writes).
    informer, models, datasets
        The FederatedLearningJob, Model and Dataset informers.
    runtime
        Runs the workers (Kubernetes or local).
    recorder
        Where events go.
    env_settings
        ``LC_SERVER`` for the workers' environment.
    nodes
        Known nodes (local mode: trainers wait for the aggregator's node to register).
    secrets
        Where ``credentialName`` Secrets are read.
    workers
        The ``Worker`` informer (local mode), to find the port an aggregator already has.
    poll_interval
        Seconds between re-checks when worker changes are not watched (Kubernetes).
    retry_interval
        Seconds between re-checks while a Secret or node is missing or workers are pending.
    restart_rules
        How often a failed worker is recreated.
    port_range, port_probe
        Local mode: where aggregator ports come from and how a free one is recognised.
    clock
        Time source for conditions, ``startTime`` and ``completionTime``.
    """

    def __init__(
        self,
        store: ResourceStore,
        informer: Informer,
        models: Informer,
        runtime: WorkloadRuntime,
        recorder: EventRecorder,
        *,
        datasets: Informer,
        env_settings: WorkerEnvSettings | None = None,
        nodes: NodeDirectory | None = None,
        secrets: SecretSource | None = None,
        workers: Informer | None = None,
        poll_interval: float = 10.0,
        retry_interval: float = 30.0,
        restart_rules: RestartRules | None = None,
        port_range: tuple[int, int] = PORT_RANGE,
        port_probe: Callable[[int], bool] = port_is_free,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.informer = informer
        self.objects = {MODEL_KIND: models, DATASET_KIND: datasets}
        self.runtime = runtime
        self.recorder = recorder
        self.env_settings = env_settings or WorkerEnvSettings()
        self.nodes = nodes
        self.secrets = secrets
        self.workers = workers
        self.poll_interval = poll_interval
        self.retry_interval = retry_interval
        self.restart_rules = restart_rules or RestartRules()
        self._clock = clock
        self._tracker = RestartTracker()
        self.ports = WorkerPorts(
            workers,
            port_range=port_range,
            probe=port_probe,
            env_name=AGG_BIND_PORT_ENV,
            worker_type=AGGREGATION,
            worker_name=aggregator_name,
        )

    @property
    def local(self) -> bool:
        """Whether workers are local processes (placement and ports are the GM's business)."""
        return self.runtime.mode is RuntimeMode.LOCAL

    # --- watches -----------------------------------------------------------------------------

    def jobs_using_model(self, model: ResourceObject) -> list[ObjectKey]:
        """The jobs whose aggregation or pretrained model is ``model``."""
        return [
            obj.key
            for obj in self.informer.list()
            if obj.namespace == model.namespace
            and model.name in (aggregation_model_name(obj), pretrained_model_name(obj))
        ]

    def jobs_using_dataset(self, dataset: ResourceObject) -> list[ObjectKey]:
        """The jobs with a training worker on ``dataset``."""
        return [
            obj.key
            for obj in self.informer.list()
            if obj.namespace == dataset.namespace and dataset.name in dataset_names(obj)
        ]

    # --- reconcile ---------------------------------------------------------------------------

    async def reconcile(self, key: ObjectKey) -> ReconcileResult:
        """Bring the job's workers, Service and status in line with its spec."""
        obj = self.informer.get(key)
        if obj is None:
            await self._remove_everything(key, None)
            return ReconcileResult()
        if obj.deletion_timestamp is not None:
            await self._finalize(obj)
            return ReconcileResult()
        obj = await hold_finalizer(self.store, obj)
        if is_finished(obj.status, obj.generation):
            return ReconcileResult()

        _, error = validate_spec(obj)
        if error:
            await self._write(obj, invalid_status(error))
            return ReconcileResult()
        inputs, problems = await resolve_inputs(obj, self.objects, self.secrets)
        if inputs is None:
            await self._write(obj, resources_status([(p.reason, p.message) for p in problems]))
            secret_trouble = any(not p.reason.endswith("NotFound") for p in problems)
            return ReconcileResult(requeue_after=self.retry_interval if secret_trouble else None)
        try:
            result, requeue = await self._ensure_workers(obj, inputs)
        except SpecError as exc:
            await self._write(obj, invalid_status(str(exc)))
            return ReconcileResult()
        except WorkloadError as exc:
            self.recorder.record(obj, "Warning", "RuntimeError", str(exc), source=_SOURCE)
            raise
        await self._write(obj, result)
        waits = [requeue] if requeue is not None else []
        if not result.finished:
            waits.append(self.poll_interval if self.workers is None else self.retry_interval)
        return ReconcileResult(requeue_after=min(waits) if waits else None)

    # --- workers -----------------------------------------------------------------------------

    def _node_known(self, node: str) -> bool:
        return self.nodes is None or self.nodes.get_node(node) is not None

    def _port(self, obj: ResourceObject) -> int:
        with spec_errors():
            pinned = explicit_agg_port(obj)
            if pinned is not None:
                return pinned
            return self.ports.port_for(obj) if self.local else DEFAULT_AGG_PORT

    def _unreachable(self, agg: WorkerStatus | None) -> str:
        """Local mode: why the aggregator's address is not known yet ("" when it is)."""
        if not self.local:
            return ""
        node = agg.node_name if agg is not None else ""
        if not node:
            return "the aggregation worker to be placed on a node (AGG_IP)"
        if not self._node_known(node):
            return f"the aggregation worker's node {node!r} to register (AGG_IP)"
        return ""

    async def _ensure_workers(
        self, obj: ResourceObject, inputs: JobInputs
    ) -> tuple[JobStatus, float | None]:
        owner = owner_of(obj)
        ns = obj.namespace
        mode, settings = self.runtime.mode, self.env_settings
        port = self._port(obj)
        agg_name = aggregator_name(obj.name)
        trainers: dict[str, DesiredWorker] = {}
        labels = {agg_name: f"aggregation worker {agg_name}"}
        with spec_errors():
            agg_want = build_aggregator(obj, inputs, mode=mode, settings=settings, port=port)
            # Check the trainers' templates before anything runs (the address comes later).
            placeholder = ServiceEndpoint("0.0.0.0", port)
            for index, dataset in enumerate(inputs.datasets):
                name = trainer_name(obj.name, index, dataset.name)
                trainers[name] = build_trainer(
                    obj, index, inputs, mode=mode, settings=settings, aggregator=placeholder
                )
                labels[name] = (
                    f"training worker {name} (Dataset {dataset.name} on node {dataset.node_name})"
                )
        observed = await self.runtime.list_workers(owner)
        agg_plan = self._plan(ns, {agg_name: agg_want}, [s for s in observed if s.name == agg_name])
        agg_status = await self._apply(obj, agg_plan)
        selector = {
            **owner_selector(KIND, obj.name),
            f"{label_prefix(KIND)}/worker-type": AGGREGATION,
        }
        extra_ports: list[tuple[str, int]] = []
        if not self.local:  # trainers reach the bulk port through the Service too
            with spec_errors():
                bulk_port = aggregator_bulk_port(obj)
            if bulk_port is not None:
                extra_ports.append(("bulk", bulk_port))
        endpoint = await self.runtime.ensure_service(
            ns,
            service_name(obj.name, AGGREGATION),
            selector,
            port,
            owner=owner,
            extra_ports=extra_ports,
        )
        others = [s for s in observed if s.name != agg_name]
        waiting = self._unreachable(agg_status.get(agg_name))
        if not waiting:
            with spec_errors():
                trainers = {
                    trainer_name(obj.name, i, d.name): build_trainer(
                        obj, i, inputs, mode=mode, settings=settings, aggregator=endpoint
                    )
                    for i, d in enumerate(inputs.datasets)
                }
            train_plan = self._plan(ns, trainers, others)
        else:
            # Keep existing trainers as they are; remove only strays.
            train_plan = self._plan(ns, {}, [s for s in others if s.name not in trainers])
        await self._apply(obj, train_plan)
        train_summary = train_plan.summary
        if waiting:  # trainers not planned: count the missing ones as pending
            missing = len(trainers) - len(train_summary.workers)
            train_summary = dataclasses.replace(
                train_summary,
                desired=len(trainers),
                active=train_summary.active + missing,
                pending=train_summary.pending + missing,
            )
        summary = merge_summaries(agg_plan.summary, train_summary)
        count = len(inputs.datasets)
        models = f"Model {ns}/{inputs.model.name} and {count} Datasets found"
        result = job_status(
            summary,
            agg_name,
            labels,
            waiting=waiting,
            resources_message=models,
        )
        waits = [p.requeue_after_s for p in (agg_plan, train_plan) if p.requeue_after_s]
        return result, min(waits) if waits else None

    def _plan(
        self, namespace: str, desired: dict[str, DesiredWorker], observed: list[WorkerStatus]
    ) -> WorkerPlan:
        return plan(namespace, desired, observed, tracker=self._tracker, rules=self.restart_rules)

    async def _apply(self, obj: ResourceObject, plan: WorkerPlan) -> dict[str, WorkerStatus]:
        """Run the plan, record an event per action; the workers' statuses afterwards."""
        results = iter(await apply_plan(self.runtime, plan))
        statuses = dict(plan.summary.workers)
        for action in plan.actions:
            if action.desired is not None:
                statuses[action.name] = next(results)
            what = f"{action.desired.spec.worker_type if action.desired else ''} worker"
            what = f"{what.strip()} {action.name}"
            record_action(
                self.recorder, obj, action, what, rolled="replaced", part_of="job", source=_SOURCE
            )
        return statuses

    # --- status ------------------------------------------------------------------------------

    async def _write(self, obj: ResourceObject, result: JobStatus) -> None:
        now = self._clock()
        generation = obj.generation
        before: list[Any] = []

        def mutate(fresh: ResourceObject) -> None:
            status = fresh.status
            before[:] = [status.get("phase")]
            for type_, condition_status, reason, text in result.conditions:
                training = type_ == CONDITION_TRAINING and condition_status == "True"
                set_condition(
                    status,
                    type_,
                    condition_status,
                    reason,
                    _with_progress(status, text) if training else text,
                    observed_generation=generation,
                    now=now,
                )
            if not status.get("startTime"):
                status["startTime"] = rfc3339(now)
            status["phase"] = result.phase
            for field in ("active", "succeeded", "failed"):
                value = getattr(result, field)
                if value is not None:
                    status[field] = value
            if result.finished:
                status.setdefault("completionTime", rfc3339(now))
            else:
                status.pop("completionTime", None)
            status["observedGeneration"] = generation

        try:
            await update_status(self.store, obj.key, mutate, current=obj)
        except NotFoundError:
            _log.debug("%s vanished before its status was written", obj.key)
            return
        if before and before[0] != result.phase:
            self._record_phase(obj, result)

    def _record_phase(self, obj: ResourceObject, result: JobStatus) -> None:
        last = next((c for c in reversed(result.conditions) if c[1] == "True"), None)
        reason, message = (last[2], last[3]) if last else (result.phase, "")
        warning = result.phase == "Failed" or (result.phase == "Pending" and last is None)
        if warning:
            failed = next((c for c in result.conditions if c[1] == "False"), None)
            if last is None and failed is not None:
                reason, message = failed[2], failed[3]
        self.recorder.record(
            obj, "Warning" if warning else "Normal", reason, message or result.phase, source=_SOURCE
        )

    # --- deletion ----------------------------------------------------------------------------

    async def _finalize(self, obj: ResourceObject) -> None:
        await finalize_workers(
            self.store, self.recorder, obj, self._remove_everything, source=_SOURCE
        )

    async def _remove_everything(self, key: ObjectKey, owner: WorkerOwner | None) -> None:
        await remove_workers(
            self.runtime, self._tracker, key, owner, kind=KIND, service_role=AGGREGATION
        )
        self.ports.forget(key)

    # --- reports -----------------------------------------------------------------------------

    async def handle_owner_report(
        self, node_name: str, owner: ObjectKey, report: hub_service_pb2.NodeReport
    ) -> None:
        """Apply a worker report: round and sample count (``kind: train``) to the job's
        status, the first result's metrics to the aggregation Model.

        Raises
        ------
        NotFoundError
            The job does not exist (the router drops the report).
        """
        if not report_has_payload(report, "worker", node_name, owner):
            return
        worker = report.worker
        job = self.informer.get(owner) or await self.store.get(
            owner.kind, owner.namespace, owner.name
        )
        results = [MessageToDict(r) for r in worker.results]
        if results:
            model = ObjectKey(MODEL_KIND, owner.namespace, aggregation_model_name(job))
            metrics = metrics_from_result(results[0])
            with contextlib.suppress(NotFoundError):
                await set_model_metrics(self.store, model, metrics, self._clock())
        if worker.kind not in ("", TRAIN):
            return
        info = MessageToDict(worker.owner_info)
        round_ = _int(info.get("currentRound"))
        samples = _int(info.get("sampleCount"))
        if samples is not None and samples < 0:  # the CRD's minimum: the write would be refused
            samples = None
        if round_ is None and samples is None:
            return
        now = self._clock()

        def mutate(obj: ResourceObject) -> None:
            status = obj.status
            if round_ is not None and round_ > int(status.get("currentRound") or 0):
                status["currentRound"] = round_
            if samples is not None:
                counts = {
                    str(c.get("nodeName")): c
                    for c in status.get("sampleCounts") or []
                    if isinstance(c, dict)
                }
                counts[node_name] = {
                    "nodeName": node_name,
                    "workerName": worker.worker_name,
                    "sampleCount": samples,
                }
                status["sampleCounts"] = [counts[n] for n in sorted(counts)]
            training = find_condition(status, CONDITION_TRAINING)
            if training is not None and training.get("status") == "True" and round_:
                message = str(training.get("message") or "").split("; round ")[0]
                set_condition(
                    status,
                    CONDITION_TRAINING,
                    "True",
                    str(training.get("reason") or "Running"),
                    _with_progress(status, message),
                    observed_generation=int(training.get("observedGeneration") or 0),
                    now=now,
                )

        await update_status(self.store, owner, mutate)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _with_progress(status: dict[str, Any], message: str) -> str:
    """``message`` plus the current round and the trainers' sample counts, when reported."""
    parts = [message] if message else []
    if status.get("currentRound"):
        parts.append(f"round {status['currentRound']}")
    counts = [
        f"{c.get('nodeName')}={c.get('sampleCount')}"
        for c in status.get("sampleCounts") or []
        if isinstance(c, dict)
    ]
    if counts:
        parts.append(f"samples {', '.join(counts)}")
    return "; ".join(parts)


def setup_federated_learning_controller(
    manager: Manager,
    router: ReportRouter,
    *,
    runtime: WorkloadRuntime,
    recorder: EventRecorder,
    env_settings: WorkerEnvSettings | None = None,
    nodes: NodeDirectory | None = None,
    secrets: SecretSource | None = None,
    workers: int = 1,
    watch_workers: bool | None = None,
    **options: Any,
) -> tuple[FederatedLearningController, Controller]:
    """Build the controller and plug it into the manager and the report router.

    It watches FederatedLearningJobs, the Models and Datasets they use and, with
    ``watch_workers`` (default: the local runtime), their workers; without that watch each
    job is re-checked every ``poll_interval``. ``options`` go to
    :class:`FederatedLearningController`.
    """
    informer = worker_informer(manager, runtime, watch_workers)
    reconciler = FederatedLearningController(
        manager.store,
        manager.informer(KIND),
        manager.informer(MODEL_KIND),
        runtime,
        recorder,
        datasets=manager.informer(DATASET_KIND),
        env_settings=env_settings,
        nodes=nodes,
        secrets=secrets,
        workers=informer,
        **options,
    )
    secondary: dict[str, KeyMapper] = {
        MODEL_KIND: reconciler.jobs_using_model,
        DATASET_KIND: reconciler.jobs_using_dataset,
    }
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
