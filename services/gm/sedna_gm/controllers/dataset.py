"""The Dataset controller: places each Dataset on its node and keeps its status.

For every Dataset it validates the spec, checks ``spec.nodeName`` is a known node (an unknown
node is a ``NodeReady=False`` condition and a retry, not an error), holds the
``sedna.io/cleanup`` finalizer, sends the Dataset to its node whenever its generation changes
(and removes it from a previous node when it moved), and removes it from the node before
releasing the finalizer on deletion. The node's dataset monitor reports the sample count,
which :meth:`DatasetController.handle_owner_report` writes to the status.

S3 credentials: a Dataset with ``spec.credentialName`` has that Secret (in its namespace)
resolved through a :class:`~sedna_gm.workloads.storage.SecretSource` on every reconcile and
every full resync, and the node gets the mapping its dataset monitor reads (``s3-endpoint``,
``s3-usehttps``, ``ACCESS_KEY_ID``, ``SECRET_ACCESS_KEY``) with the object. A Dataset is on
its node only while its credentials resolve: a missing or unusable Secret removes it from the
node, sets ``CredentialsReady=False`` (reason ``SecretNotFound``, ``InvalidSecret`` or
``SecretUnreadable``, the message naming the Secret and what is wrong) and is retried every
``secret_retry`` seconds. While the Secret resolves, it is read again every ``secret_refresh``
seconds and a changed Secret is resent to the node (a hash of the values is kept to notice
the change; the values themselves never reach logs, events or the status).
"""

from __future__ import annotations

import hashlib
import json
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
    remove_condition,
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
from sedna_gm.store.errors import NotFoundError
from sedna_gm.store.port import ResourceStore
from sedna_gm.workloads.port import WorkloadError
from sedna_gm.workloads.secret_files import InvalidSecretError
from sedna_gm.workloads.storage import (
    ACCESS_KEY_ENV,
    SECRET_KEY_ENV,
    S3Secret,
    SecretNotFoundError,
    SecretSource,
)

__all__ = [
    "CONDITION_CREDENTIALS_READY",
    "CONDITION_DATA_READY",
    "CONDITION_NODE_READY",
    "CONDITION_VALID",
    "KIND",
    "CredentialsError",
    "DatasetController",
    "dataset_phase",
    "s3_credentials",
    "setup_dataset_controller",
]

_log = logging.getLogger(__name__)

KIND = "Dataset"
CONDITION_VALID = "Valid"
CONDITION_NODE_READY = "NodeReady"
CONDITION_DATA_READY = "DataReady"
CONDITION_CREDENTIALS_READY = "CredentialsReady"

REASON_SECRET_NOT_FOUND = "SecretNotFound"
REASON_INVALID_SECRET = "InvalidSecret"
REASON_SECRET_UNREADABLE = "SecretUnreadable"


class CredentialsError(Exception):
    """``spec.credentialName`` cannot be resolved; ``reason`` is the condition reason and the
    message names the Secret and what is wrong (never a value)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def s3_credentials(secret: S3Secret) -> dict[str, str]:
    """The credentials mapping the LC's dataset monitor reads (upstream key names)."""
    return {
        "s3-endpoint": secret.endpoint,
        "s3-usehttps": "1" if secret.use_https else "0",
        ACCESS_KEY_ENV: secret.access_key_id,
        SECRET_KEY_ENV: secret.secret_access_key,
    }


def _explain(what: str, exc: Exception) -> str:
    """``what: exc`` without saying ``secret NS/NAME`` twice."""
    text = str(exc)
    secret = what.removeprefix("spec.credentialName: ")
    if text.startswith(secret):
        return f"spec.credentialName: {text}"
    return f"{what}: {text}"


def _fingerprint(credentials: Mapping[str, str]) -> str:
    """A hash that changes when the credentials do ("" for none); kept instead of values."""
    if not credentials:
        return ""
    blob = json.dumps(sorted(credentials.items()), separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def dataset_phase(status: Mapping[str, Any]) -> str:
    """Phase from the conditions: Failed (invalid spec, unusable credentials or unreadable
    data), Ready (samples counted on a known node) or Pending."""

    def state(type_: str) -> str | None:
        condition = find_condition(dict(status), type_)
        return None if condition is None else str(condition.get("status"))

    if state(CONDITION_VALID) == "False":
        return "Failed"
    if state(CONDITION_NODE_READY) == "False":
        return "Pending"
    if state(CONDITION_CREDENTIALS_READY) == "False":
        return "Failed"
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
    secrets
        Where ``spec.credentialName`` Secrets are read; None: no source, so a Dataset naming
        one gets ``CredentialsReady=False`` (``SecretNotFound``).
    secret_retry
        Seconds between re-checks of a Dataset whose Secret is missing or unusable.
    secret_refresh
        Seconds between re-reads of a resolved Secret (a change is resent to the node);
        0 re-reads only on a spec change, a GM restart or a node's full resync.
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
        secrets: SecretSource | None = None,
        secret_retry: float = 30.0,
        secret_refresh: float = 30.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.informer = informer
        self.messenger = messenger
        self.nodes = nodes
        self.recorder = recorder
        self.node_retry = node_retry
        self.secrets = secrets
        self.secret_retry = secret_retry
        self.secret_refresh = secret_refresh
        self.enqueue: Callable[[ObjectKey], None] | None = None
        """Set by :func:`setup_dataset_controller`: asks for a reconcile of one key."""
        self._clock = clock
        self._placements: dict[ObjectKey, Placement] = {}
        self._sent_credentials: dict[ObjectKey, str] = {}  # fingerprints, never values

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

        secret_name = str(obj.spec.get("credentialName") or "")
        credentials: dict[str, str] = {}
        if secret_name:
            try:
                credentials = await self.resolve_credentials(obj.namespace, secret_name)
            except CredentialsError as exc:
                await self._unplace(key, obj)
                self.recorder.record(obj, "Warning", exc.reason, exc.message, source="dataset")
                waiting = f"node {node_name!r} is known; the Dataset waits for its credentials"
                await self._write_status(
                    obj,
                    [
                        valid,
                        (CONDITION_NODE_READY, "True", "NodeFound", waiting),
                        (CONDITION_CREDENTIALS_READY, "False", exc.reason, exc.message),
                    ],
                )
                return ReconcileResult(requeue_after=self.secret_retry)

        await self._place(obj, node_name, credentials)
        conditions = [
            valid,
            (CONDITION_NODE_READY, "True", "NodeFound", f"placed on node {node_name!r}"),
        ]
        if secret_name:
            resolved = f"secret {obj.namespace}/{secret_name} resolved"
            conditions.append((CONDITION_CREDENTIALS_READY, "True", "SecretFound", resolved))
        await self._write_status(
            obj, conditions, drop=() if secret_name else (CONDITION_CREDENTIALS_READY,)
        )
        if secret_name and self.secret_refresh > 0:
            return ReconcileResult(requeue_after=self.secret_refresh)
        return ReconcileResult()

    async def _place(
        self, obj: ResourceObject, node_name: str, credentials: Mapping[str, str]
    ) -> None:
        """Send ``obj`` to ``node_name`` unless that node already has this generation with
        these credentials (removing it from a node it moved away from)."""
        key = obj.key
        wanted = Placement(node_name, obj.uid, obj.generation)
        placed = self._placements.get(key)
        fingerprint = _fingerprint(credentials)
        if placed == wanted and self._sent_credentials.get(key, "") == fingerprint:
            return
        if placed is not None and placed.node_name != node_name:
            await self.messenger.remove(placed.node_name, obj)
            self.recorder.record(
                obj,
                "Normal",
                "Moved",
                f"removed from node {placed.node_name!r}",
                source="dataset",
            )
        await self.messenger.upsert(node_name, obj, credentials)
        self._placements[key] = wanted
        self._sent_credentials[key] = fingerprint
        if placed == wanted:
            secret = f"{obj.namespace}/{obj.spec.get('credentialName')}"
            message = f"credentials from secret {secret} changed; resent to node {node_name!r}"
        else:
            message = f"generation {obj.generation} sent to node {node_name!r}"
        self.recorder.record(obj, "Normal", "Sent", message, source="dataset")

    async def resolve_credentials(self, namespace: str, secret_name: str) -> dict[str, str]:
        """Read Secret ``namespace/secret_name`` and return the mapping the LC expects.

        Raises
        ------
        CredentialsError
            The Secret is missing, lacks a key or annotation, or cannot be read.
        """
        what = f"spec.credentialName: secret {namespace}/{secret_name}"
        if self.secrets is None:
            raise CredentialsError(
                REASON_SECRET_NOT_FOUND,
                f"{what}: the GlobalManager has no secret source configured",
            )
        try:
            secret = await self.secrets.get_s3_secret(namespace, secret_name)
        except SecretNotFoundError as exc:
            raise CredentialsError(REASON_SECRET_NOT_FOUND, _explain(what, exc)) from None
        except WorkloadError as exc:
            # InvalidSecretError from the directory source; from the Kubernetes API also an
            # unreachable server, which the message says (both are retried).
            invalid = isinstance(exc, InvalidSecretError)
            reason = REASON_INVALID_SECRET if invalid else REASON_SECRET_UNREADABLE
            raise CredentialsError(reason, _explain(what, exc)) from None
        missing = [
            k
            for k, v in (
                (ACCESS_KEY_ENV, secret.access_key_id),
                (SECRET_KEY_ENV, secret.secret_access_key),
            )
            if not v
        ]
        if missing:
            raise CredentialsError(
                REASON_INVALID_SECRET,
                f"{what}: data key{'s' if len(missing) > 1 else ''} {' and '.join(missing)} "
                f"{'are' if len(missing) > 1 else 'is'} missing or empty",
            )
        return s3_credentials(secret)

    async def _finalize(self, obj: ResourceObject) -> None:
        if CLEANUP_FINALIZER not in obj.finalizers:
            return
        targets: set[str] = set()
        placed = self._placements.pop(obj.key, None)
        self._sent_credentials.pop(obj.key, None)
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
        self._sent_credentials.pop(key, None)
        if placed is not None:
            await self.messenger.remove(placed.node_name, obj)

    async def _write_status(
        self,
        obj: ResourceObject,
        conditions: Sequence[ConditionUpdate],
        *,
        drop: Sequence[str] = (),
    ) -> None:
        """Write ``conditions``; first remove the ``drop`` condition types when present."""
        if drop and any(find_condition(obj.status, t) is not None for t in drop):

            def mutate(fresh: ResourceObject) -> None:
                for type_ in drop:
                    remove_condition(fresh.status, type_)
                fresh.status["phase"] = dataset_phase(fresh.status)

            try:
                obj = await update_status(self.store, obj.key, mutate, current=obj)
            except NotFoundError:
                return
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
        """Every non-deleted Dataset whose ``spec.nodeName`` is ``node_name``, with its
        credentials read afresh.

        A Dataset whose Secret does not resolve now is left out (the node drops it, as a
        reconcile would) and its key is queued for a reconcile, which writes the condition.
        """
        desired: list[tuple[ResourceObject, Mapping[str, str]]] = []
        for obj in self.informer.list():
            if obj.deletion_timestamp is not None or obj.spec.get("nodeName") != node_name:
                continue
            secret_name = str(obj.spec.get("credentialName") or "")
            if not secret_name:
                desired.append((obj, {}))
                continue
            try:
                credentials = await self.resolve_credentials(obj.namespace, secret_name)
            except CredentialsError as exc:
                _log.info(
                    "%s left out of node %s's resync: %s (%s)",
                    obj.key,
                    node_name,
                    exc.reason,
                    exc.message,
                )
                self._placements.pop(obj.key, None)
                self._sent_credentials.pop(obj.key, None)
                if self.enqueue is not None:
                    self.enqueue(obj.key)
                continue
            if obj.key in self._placements:
                self._sent_credentials[obj.key] = _fingerprint(credentials)
            desired.append((obj, credentials))
        return desired


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
    secrets: SecretSource | None = None,
    secret_retry: float = 30.0,
    secret_refresh: float = 30.0,
) -> tuple[DatasetController, Controller]:
    """Build the Dataset controller and plug it into the manager, router and registry.

    ``secrets``, ``secret_retry`` and ``secret_refresh``: see :class:`DatasetController`.

    Returns
    -------
    tuple
        The reconciler and its :class:`Controller`.
    """
    reconciler = DatasetController(
        manager.store,
        manager.informer(KIND),
        messenger,
        nodes,
        recorder,
        node_retry=node_retry,
        secrets=secrets,
        secret_retry=secret_retry,
        secret_refresh=secret_refresh,
    )
    # Reports write status and set the phase themselves: status-only changes need no reconcile.
    controller = manager.add_controller(
        "dataset", KIND, reconciler, workers=workers, ignore_status_updates=True
    )
    reconciler.enqueue = controller.enqueue
    router.register(KIND, reconciler)
    desired.register(reconciler)
    return reconciler, controller
