"""Informer: list + watch into a cache, handlers, re-list with synthesized diffs on Gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_gm.controllers.informer import EventHandler, Informer
from sedna_gm.store.errors import GoneError, StoreUnavailableError
from sedna_gm.store.port import WatchEvent


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def handler(self) -> EventHandler:
        return EventHandler(
            on_add=lambda o: self.events.append(("add", o.name)),
            on_update=lambda old, new: self.events.append(("update", new.name)),
            on_delete=lambda o: self.events.append(("delete", o.name)),
        )


class GoneOnceStore:
    """Delegates to a store; its first watch blocks until released, then raises GoneError."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.release = asyncio.Event()
        self.watching = asyncio.Event()
        self.watches = 0
        self.fail_lists = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def list(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail_lists:
            self.fail_lists -= 1
            raise StoreUnavailableError("database down")
        return await self.inner.list(*args, **kwargs)

    async def watch(self, *args: Any, **kwargs: Any) -> AsyncIterator[WatchEvent]:
        self.watches += 1
        if self.watches == 1:
            self.watching.set()
            await self.release.wait()
            raise GoneError("too old")
        async for event in self.inner.watch(*args, **kwargs):
            yield event


async def test_list_then_watch_fills_cache_and_calls_handlers(
    store: Any, make_dataset: Callable[..., ResourceObject], eventually: Any
) -> None:
    await store.create(make_dataset("a"))
    informer = Informer(store, "Dataset")
    rec = Recorder()
    informer.add_handler(rec.handler())
    informer.start()
    try:
        assert await informer.wait_for_sync(5)
        assert informer.has_synced()
        assert rec.events == [("add", "a")]
        await store.create(make_dataset("b"))
        obj = await store.get("Dataset", "default", "a")
        obj.labels = {"x": "y"}
        await store.update(obj)
        await store.delete("Dataset", "default", "b")
        await eventually(lambda: len(rec.events) == 4, what="watch events")
        assert rec.events[1:] == [("add", "b"), ("update", "a"), ("delete", "b")]
        assert informer.list_keys() == [ObjectKey("Dataset", "default", "a")]
        cached = informer.get(ObjectKey("Dataset", "default", "a"))
        assert cached is not None
        assert cached.labels == {"x": "y"}
        # A late handler gets the current content.
        late = Recorder()
        informer.add_handler(late.handler())
        assert late.events == [("add", "a")]
    finally:
        await informer.stop()


async def test_gone_relists_and_synthesizes_diffs(
    store: Any, make_dataset: Callable[..., ResourceObject], eventually: Any
) -> None:
    await store.create(make_dataset("a"))
    await store.create(make_dataset("b"))
    wrapped = GoneOnceStore(store)
    informer = Informer(wrapped, "Dataset")
    rec = Recorder()
    informer.add_handler(rec.handler())
    informer.start()
    try:
        assert await informer.wait_for_sync(5)
        await asyncio.wait_for(wrapped.watching.wait(), 5)
        # Changes the (expired) watch never delivers.
        await store.delete("Dataset", "default", "a")
        b = await store.get("Dataset", "default", "b")
        b.spec["url"] = "/data/other.txt"
        await store.update(b)
        await store.create(make_dataset("c"))
        wrapped.release.set()
        await eventually(lambda: informer.relists == 1, what="re-list")
        assert sorted(rec.events[2:]) == [("add", "c"), ("delete", "a"), ("update", "b")]
        assert [k.name for k in informer.list_keys()] == ["b", "c"]
        # The new watch continues from the re-list's version.
        await store.create(make_dataset("d"))
        await eventually(lambda: ("add", "d") in rec.events, what="event after re-list")
    finally:
        await informer.stop()


async def test_store_failure_is_retried(
    store: Any, make_dataset: Callable[..., ResourceObject]
) -> None:
    await store.create(make_dataset("a"))
    wrapped = GoneOnceStore(store)
    wrapped.fail_lists = 2
    wrapped.watches = 1  # plain watches
    informer = Informer(wrapped, "Dataset", retry_delay=0.01)
    informer.start()
    try:
        assert await informer.wait_for_sync(5)
        assert [k.name for k in informer.list_keys()] == ["a"]
    finally:
        await informer.stop()


async def test_broken_handler_does_not_stop_the_informer(
    store: Any, make_dataset: Callable[..., ResourceObject], eventually: Any
) -> None:
    def boom(obj: ResourceObject) -> None:
        raise RuntimeError("handler bug")

    informer = Informer(store, "Dataset")
    informer.add_handler(EventHandler(on_add=boom))
    rec = Recorder()
    informer.add_handler(rec.handler())
    informer.start()
    try:
        assert await informer.wait_for_sync(5)
        await store.create(make_dataset("a"))
        await eventually(lambda: rec.events == [("add", "a")], what="second handler")
    finally:
        await informer.stop()
