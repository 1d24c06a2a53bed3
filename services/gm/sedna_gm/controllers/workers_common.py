"""Pieces shared by the controllers that run workers (JointInferenceService,
FederatedLearningJob): spec errors, worker plans and their events, URL checks, deletion and
setup."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Protocol

from sedna.resources import API_VERSION
from sedna.resources.objects import ObjectKey, ResourceObject
from sedna.resources.worker import WORKER_KIND, WorkerOwner
from sedna_gm.controllers.common import CLEANUP_FINALIZER, remove_finalizer
from sedna_gm.controllers.controller import Controller, KeyMapper, Reconciler, owner_mapper
from sedna_gm.controllers.events import EventRecorder
from sedna_gm.controllers.informer import Informer
from sedna_gm.controllers.manager import Manager
from sedna_gm.controllers.reports import OwnerReportHandler, ReportRouter
from sedna_gm.controllers.status import update_object
from sedna_gm.store.errors import NotFoundError
from sedna_gm.store.port import ResourceStore
from sedna_gm.workloads.builder import owner_of, service_name
from sedna_gm.workloads.lifecycle import (
    ActionKind,
    DesiredWorker,
    RestartRules,
    RestartTracker,
    WorkerAction,
    WorkerPlan,
    plan_workers,
)
from sedna_gm.workloads.port import RuntimeMode, WorkerStatus, WorkloadError, WorkloadRuntime
from sedna_gm.workloads.storage import StoragePlan

__all__ = [
    "SpecError",
    "WorkerReconciler",
    "add_worker_controller",
    "finalize_workers",
    "plan",
    "record_action",
    "remove_workers",
    "spec_errors",
    "url_problem",
    "worker_informer",
]


class SpecError(Exception):
    """A template or field the workers cannot be built from (a spec problem, not retried)."""


@contextlib.contextmanager
def spec_errors() -> Iterator[None]:
    """Turn the builder's :class:`WorkloadError` into a :class:`SpecError`."""
    try:
        yield
    except WorkloadError as exc:
        raise SpecError(str(exc)) from exc


def url_problem(url: str, env: str = "MODEL_URL") -> str:
    """Why a Model or Dataset URL cannot be given to a worker as ``env`` ("" when it can)."""
    if not url:
        return "has no spec.url"
    try:
        StoragePlan(RuntimeMode.LOCAL).add(env, url)
    except WorkloadError as exc:
        return f"spec.url: {str(exc).removeprefix(f'{env}: ')}"
    return ""


def plan(
    namespace: str,
    desired: Mapping[str, DesiredWorker],
    observed: list[WorkerStatus],
    *,
    tracker: RestartTracker,
    rules: RestartRules,
) -> WorkerPlan:
    """:func:`~sedna_gm.workloads.lifecycle.plan_workers` now."""
    return plan_workers(
        namespace, dict(desired), observed, now=time.monotonic(), tracker=tracker, rules=rules
    )


def record_action(
    recorder: EventRecorder,
    obj: ResourceObject,
    action: WorkerAction,
    what: str,
    *,
    rolled: str,
    part_of: str,
    source: str,
) -> None:
    """The event of one applied action on the worker ``what`` (e.g. ``cloud worker x``).

    ``rolled`` is the verb of a roll (``rolled``, ``replaced``); ``part_of`` names the owner's
    kind in the removal message (``service``, ``job``).
    """
    if action.kind is ActionKind.CREATE:
        recorder.record(obj, "Normal", "Created", f"created {what}", source=source)
    elif action.kind is ActionKind.ROLL:
        message = f"{what} {rolled}: its spec changed (generation {obj.generation})"
        recorder.record(obj, "Normal", "Rolled", message, source=source)
    elif action.kind is ActionKind.RECREATE:
        recorder.record(obj, "Warning", "Recreated", f"{what} {action.reason}", source=source)
    else:
        message = f"removed worker {action.name}: not part of the {part_of}"
        recorder.record(obj, "Normal", "Removed", message, source=source)


async def remove_workers(
    runtime: WorkloadRuntime,
    tracker: RestartTracker,
    key: ObjectKey,
    owner: WorkerOwner | None,
    *,
    kind: str,
    service_role: str,
) -> None:
    """Delete every worker of ``key`` (owner None: built from ``kind`` and ``key``) and its
    Service ``<name>-<service_role>``."""
    if owner is None:
        owner = WorkerOwner(
            api_version=API_VERSION, kind=kind, name=key.name, namespace=key.namespace
        )
    for worker in await runtime.list_workers(owner):
        await runtime.delete_worker(key.namespace, worker.name)
        tracker.forget(key.namespace, worker.name)
    await runtime.delete_service(key.namespace, service_name(key.name, service_role))


class WorkerReconciler(Reconciler, OwnerReportHandler, Protocol):
    """A reconciler that also takes its kind's worker reports."""


class _Remover(Protocol):
    async def __call__(self, key: ObjectKey, owner: WorkerOwner | None) -> None: ...


async def finalize_workers(
    store: ResourceStore,
    recorder: EventRecorder,
    obj: ResourceObject,
    remove: _Remover,
    *,
    source: str,
) -> None:
    """A deleted object holding the cleanup finalizer: ``remove`` its workers and Service,
    release the finalizer and record ``Deleted``."""
    if CLEANUP_FINALIZER not in obj.finalizers:
        return
    await remove(obj.key, owner_of(obj))
    try:
        await update_object(store, obj.key, remove_finalizer, current=obj)
    except NotFoundError:
        return  # finalized by an earlier reconcile (this one read a stale copy)
    recorder.record(obj, "Normal", "Deleted", "workers and Service removed", source=source)


def worker_informer(
    manager: Manager, runtime: WorkloadRuntime, watch_workers: bool | None
) -> Informer | None:
    """The ``Worker`` informer when worker changes are watched (default: the local runtime,
    whose ``Worker`` objects live in the store), else None."""
    if watch_workers is None:
        watch_workers = runtime.mode is RuntimeMode.LOCAL
    return manager.informer(WORKER_KIND) if watch_workers else None


def add_worker_controller(
    manager: Manager,
    router: ReportRouter,
    reconciler: WorkerReconciler,
    *,
    name: str,
    kind: str,
    secondary: dict[str, KeyMapper],
    watch_workers: bool,
    workers: int,
) -> Controller:
    """Add the controller of ``kind`` (watching its workers when ``watch_workers``) and
    register ``reconciler`` for the kind's reports."""
    if watch_workers:
        secondary[WORKER_KIND] = owner_mapper(kind)
    # Status is written by the controller and by reports: status-only changes need no reconcile.
    controller = manager.add_controller(
        name, kind, reconciler, workers=workers, secondary=secondary, ignore_status_updates=True
    )
    router.register(kind, reconciler)
    return controller
