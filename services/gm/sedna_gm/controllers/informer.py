"""An informer: a kind's objects mirrored from a ResourceStore into memory, with change events.

It lists the kind, then watches from the list's version. When the watch reports
:class:`GoneError` (the store forgot that version) or ends or fails, it lists again and
synthesizes the differences with the cache as add/update/delete events, so handlers never
miss a change. Controllers read from :meth:`Informer.get`/:meth:`Informer.list` instead of the
store: reads are free and consistent with the events that queued the key.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_gm.store.errors import GoneError
from sedna_gm.store.port import ResourceStore, WatchEvent, WatchEventType

__all__ = ["EventHandler", "Informer"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventHandler:
    """Callbacks for cache changes; each is optional and must not block (enqueue and return).

    Attributes
    ----------
    on_add
        ``(obj)`` for a new object (also for every object of the first list).
    on_update
        ``(old, new)`` for a changed object.
    on_delete
        ``(last_state)`` for a removed object.
    """

    on_add: Callable[[ResourceObject], None] | None = None
    on_update: Callable[[ResourceObject, ResourceObject], None] | None = None
    on_delete: Callable[[ResourceObject], None] | None = None


class Informer:
    """Mirror of one kind (optionally one namespace) of a :class:`ResourceStore`.

    Parameters
    ----------
    store
        Where the objects live.
    kind
        The kind to mirror, e.g. ``"Dataset"``.
    namespace
        Only this namespace; None for all.
    retry_delay
        Seconds to wait before re-listing after the store failed (not after GoneError, which
        re-lists at once); doubles up to ``max_retry_delay`` while failures continue.
    """

    def __init__(
        self,
        store: ResourceStore,
        kind: str,
        namespace: str | None = None,
        *,
        retry_delay: float = 0.5,
        max_retry_delay: float = 30.0,
    ) -> None:
        self.store = store
        self.kind = kind
        self.namespace = namespace
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._cache: dict[ObjectKey, ResourceObject] = {}
        self._handlers: list[EventHandler] = []
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.resource_version = ""
        self.relists = 0

    # --- cache reads -------------------------------------------------------------------------

    def get(self, key: ObjectKey) -> ResourceObject | None:
        """A copy of the cached object, or None."""
        obj = self._cache.get(key)
        return obj.clone() if obj is not None else None

    def list(self, namespace: str | None = None) -> builtins.list[ResourceObject]:
        """Copies of the cached objects (of ``namespace`` when given), sorted by key."""
        return [
            obj.clone()
            for key, obj in sorted(self._cache.items())
            if namespace is None or key.namespace == namespace
        ]

    def list_keys(self) -> builtins.list[ObjectKey]:
        """Cached keys, sorted."""
        return sorted(self._cache)

    # --- handlers and lifecycle --------------------------------------------------------------

    def add_handler(self, handler: EventHandler) -> None:
        """Register callbacks; a handler added after sync gets an add for every cached object."""
        self._handlers.append(handler)
        if self._synced.is_set() and handler.on_add is not None:
            for obj in self.list():
                self._call(handler.on_add, obj)

    def has_synced(self) -> bool:
        """True once the first list is in the cache."""
        return self._synced.is_set()

    async def wait_for_sync(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait for the first list; False when ``timeout`` seconds passed first."""
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def start(self) -> None:
        """Start listing and watching in a background task (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"informer-{self.kind}")

    async def stop(self) -> None:
        """Stop watching; the cache keeps its last content."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- internals ---------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self._retry_delay
        while True:
            try:
                await self._relist()
                delay = self._retry_delay
                await self._watch()
                # The watch ended without error (store closing, server timeout): re-list.
                _log.debug("watch of %s ended; re-listing", self.kind)
            except GoneError as exc:
                _log.info("watch of %s expired (%s); re-listing", self.kind, exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("informer for %s failed: %s; retrying in %.1fs", self.kind, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_retry_delay)

    async def _relist(self) -> None:
        result = await self.store.list(self.kind, self.namespace)
        fresh = {obj.key: obj for obj in result.items}
        old = self._cache
        self._cache = fresh
        self.resource_version = result.resource_version
        if self._synced.is_set():
            self.relists += 1
        for key, obj in fresh.items():
            previous = old.get(key)
            if previous is None:
                self._dispatch_add(obj)
            elif previous.resource_version != obj.resource_version:
                self._dispatch_update(previous, obj)
        for key, obj in old.items():
            if key not in fresh:
                self._dispatch_delete(obj)
        self._synced.set()

    async def _watch(self) -> None:
        stream: AsyncIterator[WatchEvent] = self.store.watch(
            self.kind, self.namespace, since=self.resource_version
        )
        try:
            async for event in stream:
                self._apply(event)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def _apply(self, event: WatchEvent) -> None:
        if event.resource_version:
            self.resource_version = event.resource_version
        obj = event.object
        if event.type is WatchEventType.BOOKMARK or obj is None:
            return
        if obj.kind != self.kind:
            return
        previous = self._cache.get(obj.key)
        if event.type is WatchEventType.DELETED:
            if previous is not None:
                del self._cache[obj.key]
                self._dispatch_delete(obj)
            return
        self._cache[obj.key] = obj
        if previous is None:
            self._dispatch_add(obj)
        else:
            self._dispatch_update(previous, obj)

    def _dispatch_add(self, obj: ResourceObject) -> None:
        for handler in self._handlers:
            if handler.on_add is not None:
                self._call(handler.on_add, obj)

    def _dispatch_update(self, old: ResourceObject, new: ResourceObject) -> None:
        for handler in self._handlers:
            if handler.on_update is not None:
                self._call(handler.on_update, old, new)

    def _dispatch_delete(self, obj: ResourceObject) -> None:
        for handler in self._handlers:
            if handler.on_delete is not None:
                self._call(handler.on_delete, obj)

    def _call(self, fn: Callable[..., None], *args: ResourceObject) -> None:
        # A broken handler must not stop the informer (other controllers share it).
        try:
            fn(*args)
        except Exception:
            _log.exception("event handler for %s failed", self.kind)
