"""Read-modify-write helpers for objects, retrying on conflicts and skipping no-op writes.

A mutation function gets a fresh copy of the object and changes it in place. When it changes
nothing, nothing is written, so an idempotent reconcile or a duplicate report does not bump
``resourceVersion`` (which would wake every watcher for nothing).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_gm.store.errors import ConflictError
from sedna_gm.store.port import ResourceStore

__all__ = ["MAX_CONFLICT_RETRIES", "Mutation", "update_object", "update_status"]

_log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 5

Mutation = Callable[[ResourceObject], None]
"""Changes a fresh copy of the object in place."""


def _metadata_and_spec(obj: ResourceObject) -> tuple[Any, ...]:
    return (
        obj.labels,
        obj.annotations,
        obj.finalizers,
        obj.owner_references,
        obj.spec,
    )


async def _read_modify_write(
    store: ResourceStore,
    key: ObjectKey,
    mutate: Mutation,
    *,
    snapshot: Callable[[ResourceObject], Any],
    write: Callable[[ResourceObject], Awaitable[ResourceObject]],
    current: ResourceObject | None,
    attempts: int,
) -> ResourceObject:
    obj = current.clone() if current is not None else await store.get(*_get_args(key))
    for attempt in range(1, attempts + 1):
        before = copy.deepcopy(snapshot(obj))
        mutate(obj)
        if snapshot(obj) == before:
            return obj
        try:
            return await write(obj)
        except ConflictError as exc:
            if attempt == attempts:
                raise
            _log.debug("conflict writing %s (attempt %d): %s; re-reading", key, attempt, exc)
            obj = await store.get(*_get_args(key))
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _get_args(key: ObjectKey) -> tuple[str, str, str]:
    return key.kind, key.namespace, key.name


async def update_status(
    store: ResourceStore,
    key: ObjectKey,
    mutate: Mutation,
    *,
    current: ResourceObject | None = None,
    attempts: int = MAX_CONFLICT_RETRIES,
) -> ResourceObject:
    """Apply ``mutate`` to the object's status and write it, retrying conflicts.

    Parameters
    ----------
    store
        The store.
    key
        The object.
    mutate
        Changes ``obj.status`` in place (other changes are not written).
    current
        A copy to start from (e.g. from an informer cache) to save a read; on conflict the
        object is re-read from the store.
    attempts
        Tries in all before the ConflictError propagates.

    Returns
    -------
    ResourceObject
        The object as written, or unchanged when the mutation was a no-op.

    Raises
    ------
    NotFoundError
        The object does not exist.
    ConflictError
        Still conflicting after ``attempts`` tries.
    """
    return await _read_modify_write(
        store,
        key,
        mutate,
        snapshot=lambda o: o.status,
        write=store.update_status,
        current=current,
        attempts=attempts,
    )


async def update_object(
    store: ResourceStore,
    key: ObjectKey,
    mutate: Mutation,
    *,
    current: ResourceObject | None = None,
    attempts: int = MAX_CONFLICT_RETRIES,
) -> ResourceObject:
    """Like :func:`update_status` for metadata and spec (finalizers, labels, owners, spec)."""
    return await _read_modify_write(
        store,
        key,
        mutate,
        snapshot=_metadata_and_spec,
        write=store.update,
        current=current,
        attempts=attempts,
    )
