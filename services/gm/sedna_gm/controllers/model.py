"""The Model controller: validates Models, keeps their status, writes reported metrics.

Models are not placed on nodes by this controller (the feature controllers send the Models
their workers need), so deletion only releases the ``sedna.io/cleanup`` finalizer. Metrics
and ``updateTime`` come from worker reports owned by the Model, or from feature controllers
through :func:`set_model_metrics` (upstream: federated learning writes the aggregated model's
metrics into the Model's status).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from google.protobuf.json_format import MessageToDict

from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_gm.controllers.common import (
    CLEANUP_FINALIZER,
    ConditionUpdate,
    hold_finalizer,
    release_finalizer,
    report_has_payload,
    validate_spec,
    write_conditions,
)
from sedna_gm.controllers.conditions import rfc3339, utcnow
from sedna_gm.controllers.controller import Controller, ReconcileResult
from sedna_gm.controllers.events import EventRecorder
from sedna_gm.controllers.informer import Informer
from sedna_gm.controllers.manager import Manager
from sedna_gm.controllers.reports import ReportRouter
from sedna_gm.controllers.status import update_status
from sedna_gm.store.port import ResourceStore

__all__ = [
    "CONDITION_VALID",
    "KIND",
    "ModelController",
    "metrics_from_result",
    "set_model_metrics",
    "setup_model_controller",
]

KIND = "Model"
CONDITION_VALID = "Valid"


def metrics_from_result(result: Mapping[str, Any]) -> list[dict[str, str]]:
    """Metrics of one worker result as ``[{"key", "value"}]`` (values as strings).

    Accepts upstream's ``{"metrics": {"acc": 0.9}}`` and the list form
    ``{"metrics": [{"key": "acc", "value": "0.9"}]}``.
    """
    raw = result.get("metrics")
    if isinstance(raw, Mapping):
        return [{"key": str(k), "value": _text(v)} for k, v in sorted(raw.items())]
    if isinstance(raw, list):
        return [
            {"key": str(item.get("key", "")), "value": _text(item.get("value", ""))}
            for item in raw
            if isinstance(item, Mapping) and item.get("key")
        ]
    return []


def _text(value: Any) -> str:
    # Struct numbers arrive as floats: 3.0 is shown as "3", like upstream's Go formatting.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


async def set_model_metrics(
    store: ResourceStore,
    key: ObjectKey,
    metrics: Sequence[Mapping[str, str]],
    update_time: datetime,
    *,
    current: ResourceObject | None = None,
) -> ResourceObject:
    """Set a Model's ``status.metrics`` and ``status.updateTime`` (no write when unchanged).

    Raises
    ------
    NotFoundError
        The Model does not exist.
    """
    wanted = [{"key": str(m["key"]), "value": str(m["value"])} for m in metrics]
    stamp = rfc3339(update_time)

    def mutate(obj: ResourceObject) -> None:
        obj.status["metrics"] = wanted
        obj.status["updateTime"] = stamp

    return await update_status(store, key, mutate, current=current)


class ModelController:
    """Reconciler and report handler for Models.

    Parameters
    ----------
    store
        Where Models live.
    informer
        The Model informer (reads).
    recorder
        Where events go.
    clock
        Time source for conditions.
    """

    def __init__(
        self,
        store: ResourceStore,
        informer: Informer,
        recorder: EventRecorder,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.informer = informer
        self.recorder = recorder
        self._clock = clock

    async def reconcile(self, key: ObjectKey) -> ReconcileResult:
        """Validate the Model, hold or release its finalizer, write phase and conditions."""
        obj = self.informer.get(key)
        if obj is None:
            return ReconcileResult()
        if obj.deletion_timestamp is not None:
            if CLEANUP_FINALIZER in obj.finalizers:
                await release_finalizer(self.store, obj)
            return ReconcileResult()
        obj = await hold_finalizer(self.store, obj)
        _, error = validate_spec(obj)
        if error:
            self.recorder.record(obj, "Warning", "InvalidSpec", error, source="model")
            condition: ConditionUpdate = (CONDITION_VALID, "False", "InvalidSpec", error)
            phase = "Failed"
        else:
            condition = (CONDITION_VALID, "True", "SpecValid", "")
            phase = "Ready"
        await write_conditions(self.store, obj, [condition], lambda _: phase, self._clock())
        return ReconcileResult()

    async def handle_owner_report(
        self, node_name: str, owner: ObjectKey, report: hub_service_pb2.NodeReport
    ) -> None:
        """Apply a worker report about a Model: metrics of its first result, and its time.

        Raises
        ------
        NotFoundError
            The Model does not exist (the router drops the report).
        """
        if not report_has_payload(report, "worker", node_name, owner):
            return
        worker = report.worker
        results = [MessageToDict(r) for r in worker.results]
        metrics = metrics_from_result(results[0]) if results else []
        if worker.HasField("report_time"):
            when = worker.report_time.ToDatetime()
        elif report.HasField("observed_time"):
            when = report.observed_time.ToDatetime()
        else:
            when = self._clock()
        # Read fresh: reports arrive faster than the informer catches up, and a stale copy
        # costs a failed write plus a re-read.
        await set_model_metrics(self.store, owner, metrics, when)


def setup_model_controller(
    manager: Manager,
    router: ReportRouter,
    recorder: EventRecorder,
    *,
    workers: int = 1,
) -> tuple[ModelController, Controller]:
    """Build the Model controller and plug it into the manager and the report router."""
    reconciler = ModelController(manager.store, manager.informer(KIND), recorder)
    # Reports write status and set the phase themselves: status-only changes need no reconcile.
    controller = manager.add_controller(
        "model", KIND, reconciler, workers=workers, ignore_status_updates=True
    )
    router.register(KIND, reconciler)
    return reconciler, controller
