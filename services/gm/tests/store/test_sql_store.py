"""SqlResourceStore specifics: several instances on one database, errors, URLs, the factory."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sedna.resources.objects import ResourceObject
from sedna_gm.store import GoneError, InvalidObjectError, StoreUnavailableError, WatchEvent
from sedna_gm.store.factory import open_store
from sedna_gm.store.sql import SqlResourceStore


def dataset(name: str = "d1") -> ResourceObject:
    return ResourceObject(kind="Dataset", name=name, spec={"url": "/d", "format": "txt"})


async def next_event(events: AsyncIterator[WatchEvent], limit_s: float = 5.0) -> WatchEvent:
    return await asyncio.wait_for(anext(events), limit_s)


@pytest.fixture(params=["sqlite", "postgresql"])
async def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


async def test_two_instances_see_each_others_writes_through_watch(shared_url: str) -> None:
    # Like two GM processes: the watcher has no in-process wake-up, only the change-log poll.
    reader = SqlResourceStore(shared_url, poll_interval=0.05)
    writer = SqlResourceStore(shared_url, poll_interval=0.05)
    await reader.start()
    await writer.start()
    try:
        since = (await reader.list("Dataset")).resource_version
        events = reader.watch("Dataset", since=since)
        created = await writer.create(dataset())
        first = await next_event(events)
        created.spec["format"] = "csv"
        updated = await writer.update(created)
        second = await next_event(events)
        await events.aclose()  # type: ignore[attr-defined]
        assert (first.type, first.resource_version) == ("ADDED", created.resource_version)
        assert (second.type, second.resource_version) == ("MODIFIED", updated.resource_version)
        assert await reader.get("Dataset", "default", "d1") == updated
        # Revisions are shared: the reader's own write comes after the writer's.
        mine = await reader.create(dataset("d2"))
        assert int(mine.resource_version) == int(updated.resource_version) + 1
    finally:
        await reader.close()
        await writer.close()


async def test_data_survives_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sedna.db'}"
    first = SqlResourceStore(url)
    await first.start()
    created = await first.create(dataset())
    await first.close()
    second = SqlResourceStore(url)
    await second.start()
    try:
        assert await second.get("Dataset", "default", "d1") == created
        events = second.watch("Dataset", since="0")
        assert (await next_event(events)).resource_version == created.resource_version
        await events.aclose()  # type: ignore[attr-defined]
    finally:
        await second.close()


async def test_unchanged_writes_keep_the_version(tmp_path: Path) -> None:
    store = SqlResourceStore(f"sqlite:///{tmp_path / 'sedna.db'}")
    await store.start()
    try:
        created = await store.create(dataset())
        same = await store.update(created.clone())
        assert same.resource_version == created.resource_version
        assert (await store.update_status(created.clone())).resource_version == (
            created.resource_version
        )
        assert (await store.list("Dataset")).resource_version == created.resource_version
    finally:
        await store.close()


async def test_no_new_finalizers_while_deleting(tmp_path: Path) -> None:
    store = SqlResourceStore(f"sqlite:///{tmp_path / 'sedna.db'}")
    await store.start()
    try:
        held = dataset()
        held.finalizers = ["a"]
        await store.create(held)
        marked = await store.delete("Dataset", "default", "d1")
        marked.finalizers = ["a", "b"]
        with pytest.raises(InvalidObjectError) as info:
            await store.update(marked)
        assert info.value.field == "metadata.finalizers"
    finally:
        await store.close()


async def test_history_is_trimmed_to_the_limit(tmp_path: Path) -> None:
    store = SqlResourceStore(f"sqlite:///{tmp_path / 'sedna.db'}", history_limit=5)
    await store.start()
    try:
        versions = [(await store.create(dataset(f"d{i}"))).resource_version for i in range(8)]
        # Kept: revisions 4..8, so a watch may resume from 3 but not from 2.
        events = store.watch("Dataset", since=versions[2])
        assert (await next_event(events)).resource_version == versions[3]
        await events.aclose()  # type: ignore[attr-defined]
        with pytest.raises(GoneError, match="too old"):
            await next_event(store.watch("Dataset", since=versions[1]))
        for bad in ("abc", "-1", " 3"):
            with pytest.raises(GoneError, match="not a version"):
                await next_event(store.watch("Dataset", since=bad))
    finally:
        await store.close()


async def test_sqlite_in_a_missing_folder_is_unavailable(tmp_path: Path) -> None:
    store = SqlResourceStore(f"sqlite:///{tmp_path / 'missing' / 'sedna.db'}")
    with pytest.raises(StoreUnavailableError, match="is unavailable"):
        await store.start()


async def test_postgres_unreachable_is_unavailable_without_password() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = SqlResourceStore(f"postgresql://gm:s3cret-pw@127.0.0.1:{port}/sedna")
    with pytest.raises(StoreUnavailableError) as info:
        await store.start()
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "s3cret-pw" not in message
    assert "***" in message


async def test_use_before_start_and_after_close_is_unavailable(tmp_path: Path) -> None:
    store = SqlResourceStore(f"sqlite:///{tmp_path / 'sedna.db'}")
    with pytest.raises(StoreUnavailableError, match="not started"):
        await store.get("Dataset", "default", "d1")
    await store.start()
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreUnavailableError, match="closed"):
        await store.list("Dataset")


def test_bad_urls_and_limits_are_value_errors() -> None:
    with pytest.raises(ValueError, match="'mysql'"):
        SqlResourceStore("mysql://localhost/db")
    with pytest.raises(ValueError, match="history_limit"):
        SqlResourceStore("sqlite:///x.db", history_limit=0)
    with pytest.raises(ValueError, match="poll_interval"):
        SqlResourceStore("sqlite:///x.db", poll_interval=0)


def test_factory_picks_the_adapter_by_scheme(tmp_path: Path) -> None:
    assert isinstance(open_store(f"sqlite:///{tmp_path / 'a.db'}"), SqlResourceStore)
    assert isinstance(open_store("sqlite+aiosqlite:///x.db"), SqlResourceStore)
    assert isinstance(open_store("postgresql://u:p@localhost/db"), SqlResourceStore)
    assert isinstance(open_store("postgresql+psycopg://u@localhost/db"), SqlResourceStore)
    with pytest.raises(ValueError, match="scheme 'redis' is not supported"):
        open_store("redis://localhost")
    with pytest.raises(ValueError, match="no scheme"):
        open_store("/var/lib/sedna.db")


async def test_a_write_whose_caller_was_cancelled_still_wakes_the_watches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The transaction runs on a worker thread and commits even if its caller is cancelled
    # meanwhile; the watches must hear of it at once, not at the next poll (an hour here).
    store = SqlResourceStore(f"sqlite:///{tmp_path / 'gm.db'}", poll_interval=3600)
    await store.start()
    started, proceed = threading.Event(), threading.Event()
    transaction = store._write_transaction

    def held(*args: Any) -> ResourceObject:
        started.set()
        proceed.wait(5.0)
        return transaction(*args)

    monkeypatch.setattr(store, "_write_transaction", held)
    try:
        since = (await store.list("Dataset")).resource_version
        events = store.watch("Dataset", since=since)
        pending = asyncio.ensure_future(next_event(events))
        write = asyncio.ensure_future(store.create(dataset()))
        assert await asyncio.to_thread(started.wait, 5.0), "the write never started"
        write.cancel()
        with pytest.raises(asyncio.CancelledError):
            await write
        proceed.set()
        event = await asyncio.wait_for(pending, 5.0)
        assert (event.type, event.object.name) == ("ADDED", "d1")
        await events.aclose()  # type: ignore[attr-defined]
    finally:
        proceed.set()
        await store.close()
