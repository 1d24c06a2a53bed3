"""The Dataset controller: places each Dataset on its node and keeps its status.

For every Dataset it validates the spec, checks ``spec.nodeName`` is a known node (an unknown
node is a ``NodeReady=False`` condition and a retry, not an error), holds the
``sedna.io/cleanup`` finalizer, sends the Dataset to its node whenever its generation changes
(and removes it from a previous node when it moved), and removes it from the node before
releasing the finalizer on deletion. The node's dataset monitor reports the sample count,
which :meth:`DatasetController.handle_owner_report` writes to the status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_gm.controllers.common import (
    CLEANUP_FINALIZER,
    ConditionUpdate,
    Placement,
    hold_finalizer,
    release_finalizer,
    report_has_payload,
    validate_spec,
    write_conditions,
)
from sedna_gm.controllers.conditions import (
    find_condition,
    rfc3339,
    set_condition,
    utcnow,
)
from sedna_gm.controllers.controller import Controller, ReconcileResult
from sedna_gm.controllers.events import EventRecorder
from sedna_gm.controllers.informer import Informer
from sedna_gm.controllers.manager import Manager
from sedna_gm.controllers.reports import DesiredStateRegistry, ReportRouter
from sedna_gm.controllers.status import update_status
from sedna_gm.core.ports import NodeDirectory, NodeMessenger
from sedna_gm.store.port import ResourceStore

__all__ = [
    "CONDITION_DATA_READY",
    "CONDITION_NODE_READY",
    "CONDITION_VALID",
    "KIND",
    "DatasetController",
    "dataset_phase",
    "setup_dataset_controller",
]

_log = logging.getLogger(__name__)

KIND = "Dataset"
CONDITION_VALID = "Valid"
CONDITION_NODE_READY = "NodeReady"
CONDITION_DATA_READY = "DataReady"


def dataset_phase(status: Mapping[str, Any]) -> str:
    """Phase from the conditions: Failed (invalid spec or unreadable data), Ready (samples
    counted on a known node) or Pending."""

    def state(type_: str) -> str | None:
        condition = find_condition(dict(status), type_)
        return None if condition is None else str(condition.get("status"))

    if state(CONDITION_VALID) == "False":
        return "Failed"
    if state(CONDITION_NODE_READY) == "False":
        return "Pending"
    data = state(CONDITION_DATA_READY)
    if data == "False":
        return "Failed"
    if data == "True":
        return "Ready"
    return "Pending"


class DatasetController:
    """Reconciler, report handler and desired-state provider for Datasets.

    Parameters
    ----------
    store
        Where Datasets live (status and finalizer writes).
    informer
        The Dataset informer (reads).
    messenger
        Sends Datasets to nodes.
    nodes
        Known nodes.
    recorder
        Where events go.
    node_retry
        Seconds between re-checks of a Dataset whose node is unknown.
    clock
        Time source for conditions (tests inject one).
    """

    def __init__(
        self,
        store: ResourceStore,
        informer: Informer,
        messenger: NodeMessenger,
        nodes: NodeDirectory,
        recorder: EventRecorder,
        *,
        node_retry: float = 30.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.informer = informer
        self.messenger = messenger
        self.nodes = nodes
        self.recorder = recorder
        self.node_retry = node_retry
        self._clock = clock
        self._placements: dict[ObjectKey, Placement] = {}

    def placement(self, key: ObjectKey) -> Placement | None:
        """What was last sent to a node for ``key`` (None when nothing is placed)."""
        return self._placements.get(key)

    # --- reconcile ---------------------------------------------------------------------------

    async def reconcile(self, key: ObjectKey) -> ReconcileResult:
        """Bring the Dataset's placement and status in line with its spec."""
        obj = self.informer.get(key)
        if obj is None:
            # Gone without our finalizer (or already finalized): clean what we placed.
            await self._unplace(
                key, ResourceObject(kind=key.kind, name=key.name, namespace=key.namespace)
            )
            return ReconcileResult()
        if obj.deletion_timestamp is not None:
            await self._finalize(obj)
            return ReconcileResult()
        obj = await hold_finalizer(self.store, obj)

        _, error = validate_spec(obj)
        if error:
            await self._unplace(key, obj)
            self.recorder.record(obj, "Warning", "InvalidSpec", error, source="dataset")
            await self._write_status(obj, [(CONDITION_VALID, "False", "InvalidSpec", error)])
            return ReconcileResult()

        node_name = str(obj.spec.get("nodeName", ""))
        valid: ConditionUpdate = (CONDITION_VALID, "True", "SpecValid", "")
        if self.nodes.get_node(node_name) is None:
            await self._unplace(key, obj)
            message = f"node {node_name!r} has not registered with the GlobalManager"
            self.recorder.record(obj, "Warning", "NodeNotFound", message, source="dataset")
            await self._write_status(
                obj, [valid, (CONDITION_NODE_READY, "False", "NodeNotFound", message)]
            )
            return ReconcileResult(requeue_after=self.node_retry)

        wanted = Placement(node_name, obj.uid, obj.generation)
        placed = self._placements.get(key)
        if placed != wanted:
            if placed is not None and placed.node_name != node_name:
                await self.messenger.remove(placed.node_name, obj)
                self.recorder.record(
                    obj,
                    "Normal",
                    "Moved",
                    f"removed from node {placed.node_name!r}",
                    source="dataset",
                )
            await self.messenger.upsert(node_name, obj)
            self._placements[key] = wanted
            self.recorder.record(
                obj,
                "Normal",
                "Sent",
                f"generation {obj.generation} sent to node {node_name!r}",
                source="dataset",
            )
        await self._write_status(
            obj,
            [valid, (CONDITION_NODE_READY, "True", "NodeFound", f"placed on node {node_name!r}")],
        )
        return ReconcileResult()

    async def _finalize(self, obj: ResourceObject) -> None:
        if CLEANUP_FINALIZER not in obj.finalizers:
            return
        targets: set[str] = set()
        placed = self._placements.pop(obj.key, None)
        if placed is not None:
            targets.add(placed.node_name)
        # Also the spec's node: after a GM restart nothing is recorded, and remove is idempotent.
        node_name = str(obj.spec.get("nodeName", ""))
        if node_name and self.nodes.get_node(node_name) is not None:
            targets.add(node_name)
        for target in sorted(targets):
            await self.messenger.remove(target, obj)
        await release_finalizer(self.store, obj)
        self.recorder.record(obj, "Normal", "Deleted", "removed from its node", source="dataset")

    async def _unplace(self, key: ObjectKey, obj: ResourceObject) -> None:
        placed = self._placements.pop(key, None)
        if placed is not None:
            await self.messenger.remove(placed.node_name, obj)

    async def _write_status(
        self, obj: ResourceObject, conditions: Sequence[ConditionUpdate]
    ) -> None:
        await write_conditions(self.store, obj, conditions, dataset_phase, self._clock())

    # --- reports -----------------------------------------------------------------------------

    async def handle_owner_report(
        self, node_name: str, owner: ObjectKey, report: hub_service_pb2.NodeReport
    ) -> None:
        """Write a node's dataset report (sample count, or read error) into the status.

        Raises
        ------
        NotFoundError
            The Dataset does not exist (the router drops the report).
        """
        if not report_has_payload(report, "dataset", node_name, owner):
            return
        data = report.dataset
        if data.HasField("update_time"):
            when = rfc3339(data.update_time.ToDatetime())
        elif report.HasField("observed_time"):
            when = rfc3339(report.observed_time.ToDatetime())
        else:
            when = rfc3339(self._clock())
        now = self._clock()

        def mutate(obj: ResourceObject) -> None:
            if obj.spec.get("nodeName") != node_name:
                # A late report from the node the Dataset moved away from.
                _log.debug("report about %s from node %s, not its node; ignored", owner, node_name)
                return
            status = obj.status
            if data.error:
                set_condition(
                    status,
                    CONDITION_DATA_READY,
                    "False",
                    "DataUnreadable",
                    data.error,
                    observed_generation=obj.generation,
                    now=now,
                )
            else:
                status["numberOfSamples"] = int(data.number_of_samples)
                set_condition(
                    status,
                    CONDITION_DATA_READY,
                    "True",
                    "SamplesCounted",
                    f"{data.number_of_samples} samples",
                    observed_generation=obj.generation,
                    now=now,
                )
            status["updateTime"] = when
            status["phase"] = dataset_phase(status)

        # Read fresh: reports arrive faster than the informer catches up, and a stale copy
        # costs a failed write plus a re-read.
        await update_status(self.store, owner, mutate)

    # --- desired state -----------------------------------------------------------------------

    async def desired_objects(
        self, node_name: str
    ) -> Sequence[tuple[ResourceObject, Mapping[str, str]]]:
        """Every non-deleted Dataset whose ``spec.nodeName`` is ``node_name``."""
        return [
            (obj, {})
            for obj in self.informer.list()
            if obj.deletion_timestamp is None and obj.spec.get("nodeName") == node_name
        ]


def setup_dataset_controller(
    manager: Manager,
    router: ReportRouter,
    desired: DesiredStateRegistry,
    *,
    messenger: NodeMessenger,
    nodes: NodeDirectory,
    recorder: EventRecorder,
    workers: int = 1,
    node_retry: float = 30.0,
) -> tuple[DatasetController, Controller]:
    """Build the Dataset controller and plug it into the manager, router and registry.

    Returns
    -------
    tuple
        The reconciler and its :class:`Controller`.
    """
    reconciler = DatasetController(
        manager.store, manager.informer(KIND), messenger, nodes, recorder, node_retry=node_retry
    )
    controller = manager.add_controller("dataset", KIND, reconciler, workers=workers)
    router.register(KIND, reconciler)
    desired.register(reconciler)
    return reconciler, controller
