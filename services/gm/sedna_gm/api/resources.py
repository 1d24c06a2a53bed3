"""The resource API core: apply, get, list, watch and delete on any ``ResourceStore``, and events.

Transport-agnostic: requests arrive as plain values, results leave as domain objects, and
problems are raised as :class:`~sedna_gm.api.errors.RequestError` (the caller's fault) or as
the store's own errors (``sedna_gm.store.errors``); the gRPC servicer maps both to status codes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any

from sedna.resources.objects import ObjectKey, ResourceObject
from sedna.resources.registry import all_kinds
from sedna_gm.api.apply import ApplyResult, apply_manifest
from sedna_gm.api.errors import RequestError
from sedna_gm.api.query import (
    ListPage,
    PageCursor,
    decode_page_token,
    encode_page_token,
    require_name,
    resolve_kind,
    resolve_namespace,
)
from sedna_gm.controllers.events import Event, EventSource
from sedna_gm.store.port import ResourceStore, WatchEvent, WatchEventType

__all__ = [
    "DEFAULT_BOOKMARK_INTERVAL",
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "ResourceApi",
]

DEFAULT_PAGE_SIZE = 500
"""Objects per List page when the client asks for 0."""
MAX_PAGE_SIZE = 1000
"""Larger page sizes are reduced to this (as AIP-158 recommends, rather than failing)."""
DEFAULT_BOOKMARK_INTERVAL = 30.0
"""Seconds of silence after which a watch asking for bookmarks gets one."""


class ResourceApi:
    """Sedna's resource API over a store.

    Parameters
    ----------
    store
        Where objects live (SQL or Kubernetes adapter).
    default_page_size, max_page_size
        List paging: the size used for 0, and the largest honoured.
    bookmark_interval
        Seconds without events after which a bookmark-asking watch gets a BOOKMARK.
    events
        Where :meth:`list_events` reads the controllers' events; none: every list is empty.
    """

    def __init__(
        self,
        store: ResourceStore,
        *,
        default_page_size: int = DEFAULT_PAGE_SIZE,
        max_page_size: int = MAX_PAGE_SIZE,
        bookmark_interval: float = DEFAULT_BOOKMARK_INTERVAL,
        events: EventSource | None = None,
    ) -> None:
        if not 0 < default_page_size <= max_page_size:
            raise ValueError("need 0 < default_page_size <= max_page_size")
        if bookmark_interval <= 0:
            raise ValueError("bookmark_interval must be positive")
        self._store = store
        self._default_page_size = default_page_size
        self._max_page_size = max_page_size
        self._bookmark_interval = bookmark_interval
        self._events = events

    @property
    def store(self) -> ResourceStore:
        """The store the API reads and writes."""
        return self._store

    async def apply(
        self,
        manifest: Mapping[str, Any],
        *,
        dry_run: bool = False,
        expected_resource_version: str = "",
    ) -> ApplyResult:
        """Validate and create or update an object; see :func:`sedna_gm.api.apply_manifest`."""
        return await apply_manifest(
            self._store,
            manifest,
            dry_run=dry_run,
            expected_resource_version=expected_resource_version,
        )

    async def get(self, kind: str, namespace: str, name: str) -> ResourceObject:
        """Return one object (``namespace`` defaults to ``default``).

        Raises
        ------
        RequestError
            Unknown kind or empty name.
        sedna_gm.store.errors.NotFoundError
            No such object.
        """
        info = resolve_kind(kind)
        return await self._store.get(info.kind, resolve_namespace(namespace), require_name(name))

    async def list(
        self,
        kind: str,
        namespace: str = "",
        label_selector: Mapping[str, str] | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> ListPage:
        """Return one page of the objects of a kind, sorted by namespace then name.

        Parameters
        ----------
        kind
            Kind, plural, singular or short name.
        namespace
            Empty lists every namespace.
        label_selector
            Every label must match exactly.
        page_size
            Objects per page; 0 means the default, larger than the maximum means the maximum.
        page_token
            ``next_page_token`` of the previous page.

        Raises
        ------
        RequestError
            Unknown kind, negative page size, empty label key, foreign or malformed token.
        """
        info = resolve_kind(kind)
        if page_size < 0:
            raise RequestError.for_field("page_size", f"Invalid value: {page_size}: must be >= 0")
        size = min(page_size or self._default_page_size, self._max_page_size)
        selector = dict(label_selector or {})
        if any(not key for key in selector):
            raise RequestError.for_field("label_selector", "label keys must not be empty")
        cursor = (
            decode_page_token(page_token, info.kind, namespace, selector) if page_token else None
        )
        listed = await self._store.list(info.kind, namespace or None, selector or None)
        items = sorted(listed.items, key=lambda obj: (obj.namespace, obj.name))
        version = listed.resource_version
        if cursor is not None:
            items = [obj for obj in items if (obj.namespace, obj.name) > cursor.after]
            version = cursor.resource_version
        page, more = items[:size], len(items) > size
        token = ""
        if more:
            token = encode_page_token(
                PageCursor(
                    kind=info.kind,
                    namespace=namespace,
                    selector=tuple(sorted(selector.items())),
                    after=(page[-1].namespace, page[-1].name),
                    resource_version=version,
                )
            )
        return ListPage(items=page, resource_version=version, next_page_token=token)

    async def delete(
        self, kind: str, namespace: str, name: str, expected_resource_version: str = ""
    ) -> ResourceObject:
        """Request deletion; returns the object as it was (with ``deletionTimestamp`` set).

        Raises
        ------
        RequestError
            Unknown kind or empty name.
        sedna_gm.store.errors.NotFoundError, sedna_gm.store.errors.ConflictError
            From the store.
        """
        info = resolve_kind(kind)
        return await self._store.delete(
            info.kind,
            resolve_namespace(namespace),
            require_name(name),
            expected_resource_version,
        )

    async def list_events(self, kind: str, namespace: str, name: str) -> Sequence[Event]:
        """The events recorded about one object, oldest first (``namespace`` defaults).

        An object without events, or one that does not exist (any more), has none: events
        outlive their object for a while, as on Kubernetes.

        Raises
        ------
        RequestError
            Unknown kind or empty name.
        """
        info = resolve_kind(kind)
        key = ObjectKey(info.kind, resolve_namespace(namespace), require_name(name))
        if self._events is None:
            return []
        return await self._events.list_events(key)

    async def watch(
        self,
        kind: str = "",
        namespace: str = "",
        resource_version: str = "",
        allow_bookmarks: bool = False,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Stream changes; with no ``resource_version``, first an ADDED event per object.

        Parameters
        ----------
        kind
            Any name of a kind; empty watches every kind.
        namespace
            Empty watches every namespace.
        resource_version
            Resume after this version (from a List or a previous event).
        allow_bookmarks
            Pass the store's BOOKMARK events on, and send one after ``bookmark_interval``
            seconds without events, carrying the latest version seen.

        Yields
        ------
        WatchEvent
            In store order (per kind when watching every kind from the current state).

        Raises
        ------
        RequestError
            Unknown kind.
        sedna_gm.store.errors.GoneError
            ``resource_version`` is too old: list again, then watch from the list's version.
        """
        info = resolve_kind(kind) if kind else None
        kinds = [info.kind] if info is not None else [k.kind for k in all_kinds()]
        ns = namespace or None
        initial: list[WatchEvent] = []
        if resource_version:
            events = self._store.watch(info.kind if info else None, ns, since=resource_version)
            last = resource_version
        else:
            # Per-kind list + watch from that list's version: exact, because versions are
            # opaque and cannot be compared across two lists.
            sources: list[AsyncIterator[WatchEvent]] = []
            last = ""
            for name in kinds:
                listed = await self._store.list(name, ns)
                initial.extend(
                    WatchEvent(WatchEventType.ADDED, obj, obj.resource_version)
                    for obj in sorted(listed.items, key=lambda o: (o.namespace, o.name))
                )
                sources.append(self._store.watch(name, ns, since=listed.resource_version))
                last = listed.resource_version
            events = sources[0] if len(sources) == 1 else _merge(sources)
        stream = (
            _with_bookmarks(events, self._bookmark_interval, last)
            if allow_bookmarks
            else _without_bookmarks(events)
        )
        try:
            for event in initial:
                yield event
            async for event in stream:
                yield event
        finally:
            await _aclose(stream)


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


async def _without_bookmarks(events: AsyncIterator[WatchEvent]) -> AsyncIterator[WatchEvent]:
    try:
        async for event in events:
            if event.type is not WatchEventType.BOOKMARK:
                yield event
    finally:
        await _aclose(events)


async def _with_bookmarks(
    events: AsyncIterator[WatchEvent], interval: float, last: str
) -> AsyncIterator[WatchEvent]:
    # The pending __anext__ survives timeouts (asyncio.wait does not cancel it): cancelling
    # it would end the store's watch generator.
    pending: asyncio.Future[WatchEvent] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                if last:
                    yield WatchEvent(WatchEventType.BOOKMARK, None, last)
                continue
            finished, pending = pending, None
            try:
                event = finished.result()
            except StopAsyncIteration:
                return
            last = event.resource_version or last
            yield event
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        await _aclose(events)


_END = object()


async def _merge(sources: Sequence[AsyncIterator[WatchEvent]]) -> AsyncIterator[WatchEvent]:
    """Interleave several watches; ends when all end, raises the first error of any."""
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=256)

    async def pump(source: AsyncIterator[WatchEvent]) -> None:
        try:
            async for event in source:
                await queue.put(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the consumer, which re-raises it
            await queue.put(exc)
        else:
            await queue.put(_END)

    tasks = [asyncio.create_task(pump(source)) for source in sources]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is _END:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                assert isinstance(item, WatchEvent)
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for source in sources:
            await _aclose(source)
