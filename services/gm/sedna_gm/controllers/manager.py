"""The Manager: owns the shared informers and runs every controller."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry

from sedna_gm.controllers.controller import Controller, KeyMapper, Reconciler
from sedna_gm.controllers.informer import Informer
from sedna_gm.controllers.metrics import ControllerMetrics
from sedna_gm.controllers.ratelimit import RateLimiter
from sedna_gm.store.port import ResourceStore

__all__ = ["Manager"]

_log = logging.getLogger(__name__)


class Manager:
    """Shared informers (one per kind) plus the controllers built on them.

    Parameters
    ----------
    store
        The resource store every informer mirrors.
    registry
        Prometheus registry for the controller metrics (e.g. ``ServiceServer.registry``).
    namespace
        Only watch this namespace; None for all.
    sync_timeout
        Longest wait in :meth:`start` for the informers' first list.
    """

    def __init__(
        self,
        store: ResourceStore,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str | None = None,
        sync_timeout: float = 30.0,
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.metrics = ControllerMetrics(registry or CollectorRegistry())
        self._sync_timeout = sync_timeout
        self._informers: dict[str, Informer] = {}
        self._controllers: list[Controller] = []
        self._started = False

    def informer(self, kind: str) -> Informer:
        """The shared informer of ``kind`` (created on first use, started with the manager)."""
        informer = self._informers.get(kind)
        if informer is None:
            informer = Informer(self.store, kind, self.namespace)
            self._informers[kind] = informer
            if self._started:
                informer.start()
        return informer

    def add_controller(
        self,
        name: str,
        kind: str,
        reconciler: Reconciler,
        *,
        workers: int = 1,
        secondary: dict[str, KeyMapper] | None = None,
        rate_limiter: RateLimiter | None = None,
        ignore_status_updates: bool = False,
    ) -> Controller:
        """Create and register a controller of ``kind``.

        Parameters
        ----------
        name
            Unique controller name (metrics label).
        kind
            Primary kind.
        reconciler
            The reconcile logic.
        workers
            Concurrent reconciles.
        secondary
            Secondary kind -> mapper to primary keys (e.g. ``owner_mapper(kind)``).
        rate_limiter
            Overrides the default backoff.
        ignore_status_updates
            Skip reconciles for status-only changes of the primary kind.

        Returns
        -------
        Controller
            The controller (its ``enqueue`` lets other triggers queue keys).
        """
        if any(c.name == name for c in self._controllers):
            raise ValueError(f"a controller named {name!r} is already registered")
        controller = Controller(
            name,
            reconciler,
            self.informer(kind),
            workers=workers,
            metrics=self.metrics,
            rate_limiter=rate_limiter,
            ignore_status_updates=ignore_status_updates,
        )
        for secondary_kind, mapper in (secondary or {}).items():
            controller.watches(self.informer(secondary_kind), mapper)
        self._controllers.append(controller)
        return controller

    @property
    def controllers(self) -> list[Controller]:
        """Registered controllers."""
        return list(self._controllers)

    async def start(self) -> None:
        """Start the informers, wait for their first list, then start every controller.

        Raises
        ------
        TimeoutError
            An informer did not sync within ``sync_timeout`` (the store is unreachable).
        """
        self._started = True
        for informer in self._informers.values():
            informer.start()
        for kind, informer in self._informers.items():
            if not await informer.wait_for_sync(self._sync_timeout):
                raise TimeoutError(
                    f"informer for {kind} did not sync within {self._sync_timeout}s; "
                    "is the resource store reachable?"
                )
        for controller in self._controllers:
            await controller.start()
        _log.info(
            "controller manager started: %s",
            ", ".join(c.name for c in self._controllers) or "no controllers",
        )

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop the controllers (draining in-flight reconciles), then the informers."""
        for controller in self._controllers:
            await controller.stop(drain_timeout)
        for informer in self._informers.values():
            await informer.stop()
        self._started = False
