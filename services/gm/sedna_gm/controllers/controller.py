"""A controller: informers feed keys into a work queue; workers reconcile them.

Semantics follow controller-runtime: a reconcile gets only the key and reads current state
(from the informer cache); it returns :class:`ReconcileResult` to ask for a retry or a
periodic re-check; an exception is logged, counted and retried with per-key backoff; a key is
never reconciled by two workers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_gm.controllers.informer import EventHandler, Informer
from sedna_gm.controllers.metrics import ControllerMetrics
from sedna_gm.controllers.ratelimit import RateLimiter
from sedna_gm.controllers.workqueue import QueueShutDown, WorkQueue

__all__ = [
    "Controller",
    "KeyMapper",
    "ReconcileResult",
    "Reconciler",
    "owner_mapper",
]

_log = logging.getLogger(__name__)

KeyMapper = Callable[[ResourceObject], Iterable[ObjectKey]]
"""Maps a changed secondary object to the primary keys to reconcile."""


@dataclass(frozen=True)
class ReconcileResult:
    """What a reconcile asks for next.

    Attributes
    ----------
    requeue
        Retry with the key's rate-limited backoff.
    requeue_after
        Re-check after this many seconds (takes precedence over ``requeue``); the backoff
        is reset, as after a success.
    """

    requeue: bool = False
    requeue_after: float | None = None


class Reconciler(Protocol):
    """Brings one object's world in line with its spec."""

    async def reconcile(self, key: ObjectKey) -> ReconcileResult:
        """Reconcile ``key`` (which may no longer exist); raise to retry with backoff."""
        ...


def owner_mapper(owner_kind: str, *, controller_only: bool = False) -> KeyMapper:
    """A :data:`KeyMapper` following ``metadata.ownerReferences`` to owners of ``owner_kind``.

    Parameters
    ----------
    owner_kind
        Kind of the primary objects, e.g. ``"JointInferenceService"``.
    controller_only
        Only follow references with ``controller: true``.
    """

    def mapper(obj: ResourceObject) -> list[ObjectKey]:
        return [
            ObjectKey(ref.kind, obj.namespace, ref.name)
            for ref in obj.owner_references
            if ref.kind == owner_kind and (ref.controller or not controller_only)
        ]

    return mapper


def status_only_change(old: ResourceObject, new: ResourceObject) -> bool:
    """Whether ``new`` differs from ``old`` in its status (and version) only."""
    return (
        old.generation == new.generation
        and old.spec == new.spec
        and old.deletion_timestamp == new.deletion_timestamp
        and old.finalizers == new.finalizers
        and old.labels == new.labels
        and old.annotations == new.annotations
        and old.owner_references == new.owner_references
    )


class Controller:
    """Reconciles the objects of one kind with N workers.

    Parameters
    ----------
    name
        Controller name (metrics label, log prefix), e.g. ``"dataset"``.
    reconciler
        The logic.
    primary
        Informer of the reconciled kind: every add, update and delete queues the object's key.
    workers
        Concurrent reconciles (of different keys).
    metrics
        Shared metric families; None for none.
    rate_limiter
        Backoff of failing keys; default 5 ms..300 s per key, 10 qps / burst 100 overall.
    ignore_status_updates
        Do not reconcile when only the primary object's status changed (controller-runtime's
        GenerationChangedPredicate), for controllers whose reconcile does not read status
        written by others: every report would otherwise cost a reconcile.
    """

    def __init__(
        self,
        name: str,
        reconciler: Reconciler,
        primary: Informer,
        *,
        workers: int = 1,
        metrics: ControllerMetrics | None = None,
        rate_limiter: RateLimiter | None = None,
        ignore_status_updates: bool = False,
    ) -> None:
        if workers < 1:
            raise ValueError(f"controller {name!r}: workers must be >= 1, got {workers!r}")
        self.name = name
        self.reconciler = reconciler
        self.primary = primary
        self.workers = workers
        self.queue: WorkQueue[ObjectKey] = WorkQueue(name, rate_limiter, metrics)
        self._informers: list[Informer] = [primary]
        self._tasks: list[asyncio.Task[None]] = []
        self._metrics = metrics
        primary.add_handler(
            self._enqueue_handler(lambda obj: [obj.key], skip_status_only=ignore_status_updates)
        )

    def watches(self, informer: Informer, mapper: KeyMapper) -> None:
        """Also reconcile when objects of a secondary kind change.

        Parameters
        ----------
        informer
            Informer of the secondary kind (shared through the :class:`Manager`).
        mapper
            Primary keys to queue for a changed secondary object, e.g.
            :func:`owner_mapper`.
        """
        if informer not in self._informers:
            self._informers.append(informer)
        informer.add_handler(self._enqueue_handler(mapper))

    @property
    def informers(self) -> list[Informer]:
        """The informers this controller needs synced before it starts."""
        return list(self._informers)

    def _enqueue_handler(
        self, mapper: KeyMapper, *, skip_status_only: bool = False
    ) -> EventHandler:
        def enqueue(obj: ResourceObject) -> None:
            for key in mapper(obj):
                self.queue.add(key)

        def on_update(old: ResourceObject, new: ResourceObject) -> None:
            if skip_status_only and status_only_change(old, new):
                return
            # A secondary object moved between owners: both must be reconciled.
            enqueue(old)
            enqueue(new)

        return EventHandler(on_add=enqueue, on_update=on_update, on_delete=enqueue)

    def enqueue(self, key: ObjectKey) -> None:
        """Queue ``key`` for a reconcile (for triggers other than informers, e.g. reports)."""
        self.queue.add(key)

    async def start(self) -> None:
        """Start the workers (the informers must be started; waits for their sync)."""
        for informer in self._informers:
            await informer.wait_for_sync()
        for index in range(self.workers):
            self._tasks.append(
                asyncio.create_task(self._worker(), name=f"controller-{self.name}-{index}")
            )

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop queuing, let in-flight reconciles finish (up to ``drain_timeout``), then stop."""
        drained = await self.queue.shutdown_with_drain(drain_timeout)
        if not drained:
            _log.warning(
                "controller %s: reconciles still running after %.1fs", self.name, drain_timeout
            )
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except QueueShutDown:
                return
            try:
                await self.process(key)
            finally:
                self.queue.done(key)

    async def process(self, key: ObjectKey) -> None:
        """Reconcile one key and requeue it as the result says (workers call this)."""
        started = time.perf_counter()
        try:
            result = await self.reconciler.reconcile(key)
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception(
                "controller %s: reconcile of %s failed (retry %d)",
                self.name,
                key,
                self.queue.num_requeues(key) + 1,
            )
            self._observe(started, "error")
            if self._metrics is not None:
                self._metrics.reconcile_errors.labels(self.name).inc()
            self.queue.add_rate_limited(key)
            return
        if result.requeue_after is not None and result.requeue_after > 0:
            self._observe(started, "requeue_after")
            self.queue.forget(key)
            self.queue.add_after(key, result.requeue_after)
        elif result.requeue:
            self._observe(started, "requeue")
            self.queue.add_rate_limited(key)
        else:
            self._observe(started, "success")
            self.queue.forget(key)

    def _observe(self, started: float, result: str) -> None:
        if self._metrics is None:
            return
        self._metrics.reconcile_seconds.labels(self.name).observe(time.perf_counter() - started)
        self._metrics.reconcile_total.labels(self.name, result).inc()
