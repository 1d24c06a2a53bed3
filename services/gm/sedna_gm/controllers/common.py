"""Pieces shared by the resource controllers: finalizer, validation, placement records,
condition writes and report checks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_gm.controllers.conditions import ConditionStatus, set_condition
from sedna_gm.controllers.status import update_object, update_status
from sedna_gm.store.errors import NotFoundError
from sedna_gm.store.port import ResourceStore

__all__ = [
    "CLEANUP_FINALIZER",
    "ConditionUpdate",
    "Placement",
    "add_finalizer",
    "hold_finalizer",
    "release_finalizer",
    "remove_finalizer",
    "report_has_payload",
    "validate_spec",
    "write_conditions",
]

_log = logging.getLogger(__name__)

CLEANUP_FINALIZER = "sedna.io/cleanup"
"""Held by every object a controller places on nodes, until it is removed from them."""


@dataclass(frozen=True)
class Placement:
    """What was last sent to a node for one object: resent when any of these changes."""

    node_name: str
    uid: str
    generation: int


def add_finalizer(obj: ResourceObject, finalizer: str = CLEANUP_FINALIZER) -> None:
    """Mutation: add ``finalizer`` when missing."""
    if finalizer not in obj.finalizers:
        obj.finalizers.append(finalizer)


def remove_finalizer(obj: ResourceObject, finalizer: str = CLEANUP_FINALIZER) -> None:
    """Mutation: remove ``finalizer`` when present."""
    obj.finalizers = [f for f in obj.finalizers if f != finalizer]


async def hold_finalizer(store: ResourceStore, obj: ResourceObject) -> ResourceObject:
    """Add :data:`CLEANUP_FINALIZER` to the stored object unless ``obj`` has it already.

    Returns
    -------
    ResourceObject
        The object as stored afterwards (``obj`` itself when it had the finalizer).
    """
    if CLEANUP_FINALIZER in obj.finalizers:
        return obj
    return await update_object(store, obj.key, add_finalizer, current=obj)


async def release_finalizer(store: ResourceStore, obj: ResourceObject) -> None:
    """Remove :data:`CLEANUP_FINALIZER` from the stored object; no error when it is gone."""
    try:
        await update_object(store, obj.key, remove_finalizer, current=obj)
    except NotFoundError:
        _log.debug("%s vanished before its finalizer was removed", obj.key)


ConditionUpdate = tuple[str, ConditionStatus, str, str]
"""``(type, status, reason, message)`` of one condition."""


async def write_conditions(
    store: ResourceStore,
    obj: ResourceObject,
    conditions: Sequence[ConditionUpdate],
    phase: Callable[[Mapping[str, Any]], str],
    now: datetime,
) -> None:
    """Set ``conditions``, ``observedGeneration`` and ``phase(status)`` in the object's status.

    The conditions and ``observedGeneration`` carry ``obj``'s generation; nothing is written
    when nothing changes, and an object deleted meanwhile is no error.
    """
    generation = obj.generation

    def mutate(fresh: ResourceObject) -> None:
        for type_, status, reason, message in conditions:
            set_condition(
                fresh.status,
                type_,
                status,
                reason,
                message,
                observed_generation=generation,
                now=now,
            )
        fresh.status["observedGeneration"] = generation
        fresh.status["phase"] = phase(fresh.status)

    try:
        await update_status(store, obj.key, mutate, current=obj)
    except NotFoundError:
        _log.debug("%s vanished before its status was written", obj.key)


def report_has_payload(
    report: hub_service_pb2.NodeReport, payload: str, node_name: str, owner: ObjectKey
) -> bool:
    """True when ``report`` carries ``payload``; otherwise log that it is dropped.

    ``payload`` is the one report kind the owner's kind takes, e.g. ``dataset`` for Datasets.
    """
    if report.WhichOneof("payload") == payload:
        return True
    _log.warning(
        "%s report from node %s about %s %s: %ss only take %s reports; dropped",
        report.WhichOneof("payload"),
        node_name,
        owner.kind,
        owner,
        owner.kind,
        payload,
    )
    return False


def validate_spec(obj: ResourceObject) -> tuple[Any, str]:
    """Validate ``obj`` against its kind's model.

    Returns
    -------
    tuple
        ``(typed object, "")`` when valid, ``(None, message)`` otherwise; the message names
        every offending field, e.g. ``spec.url: Field required``.
    """
    try:
        return obj.typed(), ""
    except ValidationError as exc:
        parts = []
        for error in exc.errors():
            path = ".".join(str(p) for p in error["loc"]) or "<object>"
            parts.append(f"{path}: {error['msg']}")
        return None, "; ".join(parts)
    except KeyError:
        return None, f"kind {obj.kind!r} is not a Sedna kind"
