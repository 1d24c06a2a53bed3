"""The ResourceStore contract: the semantics of ``sedna_gm.store.port`` as tests for any adapter.

Use it by subclassing :class:`StoreContract` in a ``Test*`` class that provides a ``store``
fixture (a started, empty store, closed afterwards), overrides :meth:`expire_history` and, where
the backend genuinely cannot give a guarantee, sets the matching capability attribute of
:class:`StoreContract` to the reason (the test then checks the weaker guarantee instead).
Under ``--import-mode=importlib`` the tests folder is not importable, so load this module by
path, under the name every suite uses (one module object however many suites load it)::

    from support.modules import load_module

    contract = load_module("sedna_store_contract", PATH_TO_THIS_FILE)

    class TestMyStore(contract.StoreContract):
        @pytest.fixture
        async def store(self): ...

Only ``Dataset`` and ``Model`` objects with schema-valid specs are used, so CRD-validating
backends accept them; BOOKMARK events are skipped wherever an adapter may send them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sedna.resources.objects import OwnerRef, ResourceObject
from sedna_gm.store import (
    AlreadyExistsError,
    ConflictError,
    GoneError,
    InvalidObjectError,
    NotFoundError,
    ResourceStore,
    WatchEvent,
    WatchEventType,
)

__all__ = ["StoreContract", "dataset", "model", "next_change"]

EVENT_LIMIT_S = 5.0


def dataset(name: str = "d1", namespace: str = "default", **labels: str) -> ResourceObject:
    """A valid Dataset."""
    return ResourceObject(
        kind="Dataset",
        name=name,
        namespace=namespace,
        labels=dict(labels),
        spec={"url": "/data/train.txt", "format": "txt", "nodeName": "edge-1"},
    )


def model(name: str = "m1", namespace: str = "default") -> ResourceObject:
    """A valid Model."""
    return ResourceObject(
        kind="Model", name=name, namespace=namespace, spec={"url": "/m", "format": "pb"}
    )


async def next_change(events: AsyncIterator[WatchEvent], limit_s: float = EVENT_LIMIT_S) -> Any:
    """The next non-BOOKMARK event, failing after ``limit_s`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"no watch event within {limit_s} s")
        try:
            event = await asyncio.wait_for(anext(events), remaining)
        except TimeoutError:
            raise AssertionError(f"no watch event within {limit_s} s") from None
        if event.type is not WatchEventType.BOOKMARK:
            return event


async def aclose(events: AsyncIterator[WatchEvent]) -> None:
    """Close a watch iterator."""
    closer = getattr(events, "aclose", None)
    if closer is not None:
        await closer()


def version(value: str) -> int:
    """Both adapters' versions are decimal integers; the contract orders them numerically."""
    return int(value)


class StoreContract:
    """The contract tests; subclasses provide the ``store`` fixture and history expiry.

    Capabilities (class attributes) an adapter may lack, each None when it has it, else the
    reason it cannot:

    ``per_kind_watch_order``
        A watch of every kind (``kind=None``) delivers changes in one order across kinds.
        Without it, the order holds within each kind and every change still arrives once.
    """

    per_kind_watch_order: str | None = None

    async def expire_history(self, store: ResourceStore) -> None:
        """Make the store forget every version written before this call (compaction)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement expire_history for its adapter"
        )

    # -- create / get ----------------------------------------------------------------------

    def test_is_a_resource_store(self, store: ResourceStore) -> None:
        assert isinstance(store, ResourceStore)

    async def test_create_sets_server_fields_and_get_round_trips(
        self, store: ResourceStore
    ) -> None:
        obj = dataset(app="a")
        obj.annotations = {"note": "x"}
        obj.finalizers = ["sedna.io/cleanup"]
        obj.owner_references = [
            OwnerRef("sedna.io/v1alpha1", "Model", "m", "uid-1", controller=True)
        ]
        obj.status = {"phase": "ignored"}
        created = await store.create(obj)
        assert created.uid
        assert created.resource_version
        assert created.generation == 1
        assert created.creation_timestamp is not None
        assert created.creation_timestamp.tzinfo is not None
        assert created.deletion_timestamp is None
        assert created.status == {}
        assert created.spec == obj.spec
        got = await store.get("Dataset", "default", "d1")
        assert got == created
        assert got.labels == {"app": "a"}
        assert got.annotations == {"note": "x"}
        assert got.finalizers == ["sedna.io/cleanup"]
        assert got.owner_references == obj.owner_references
        other = await store.create(dataset("d2"))
        assert other.uid != created.uid
        assert version(other.resource_version) > version(created.resource_version)

    async def test_create_existing_and_get_missing(self, store: ResourceStore) -> None:
        await store.create(dataset())
        with pytest.raises(AlreadyExistsError, match="already exists"):
            await store.create(dataset())
        # Same name in another namespace or of another kind is another object.
        await store.create(dataset(namespace="team"))
        await store.create(model("d1"))
        with pytest.raises(NotFoundError, match="Dataset default/nope not found"):
            await store.get("Dataset", "default", "nope")
        with pytest.raises(NotFoundError):
            await store.get("Dataset", "elsewhere", "d1")

    async def test_invalid_name_names_the_field(self, store: ResourceStore) -> None:
        with pytest.raises(InvalidObjectError) as info:
            await store.create(dataset("Not_Valid"))
        assert info.value.field == "metadata.name"
        assert "metadata.name" in str(info.value)

    async def test_returned_objects_are_copies(self, store: ResourceStore) -> None:
        obj = dataset(app="a")
        created = await store.create(obj)
        obj.spec["url"] = "/changed-input"
        obj.labels["app"] = "changed-input"
        created.spec["url"] = "/changed-result"
        created.labels["app"] = "changed-result"
        got = await store.get("Dataset", "default", "d1")
        assert got.spec["url"] == "/data/train.txt"
        assert got.labels == {"app": "a"}
        got.spec["url"] = "/changed-get"
        listed = await store.list("Dataset")
        assert listed.items[0].spec["url"] == "/data/train.txt"
        listed.items[0].labels["app"] = "changed-list"
        assert (await store.get("Dataset", "default", "d1")).labels == {"app": "a"}

    # -- list ------------------------------------------------------------------------------

    async def test_list_namespaces_selectors_and_sorting(self, store: ResourceStore) -> None:
        await store.create(dataset("b", app="x", tier="gold"))
        await store.create(dataset("a", app="y"))
        await store.create(dataset("c", namespace="other", app="x"))
        await store.create(dataset("a", namespace="zeta", app="x", tier="gold"))
        await store.create(model("a"))
        everywhere = await store.list("Dataset")
        assert [(o.namespace, o.name) for o in everywhere.items] == [
            ("default", "a"),
            ("default", "b"),
            ("other", "c"),
            ("zeta", "a"),
        ]
        assert everywhere.resource_version
        assert version(everywhere.resource_version) >= max(
            version(o.resource_version) for o in everywhere.items
        )
        assert [o.name for o in (await store.list("Dataset", "default")).items] == ["a", "b"]
        selected = await store.list("Dataset", label_selector={"app": "x"})
        assert [(o.namespace, o.name) for o in selected.items] == [
            ("default", "b"),
            ("other", "c"),
            ("zeta", "a"),
        ]
        both = await store.list("Dataset", label_selector={"app": "x", "tier": "gold"})
        assert [(o.namespace, o.name) for o in both.items] == [("default", "b"), ("zeta", "a")]
        scoped = await store.list("Dataset", "zeta", label_selector={"tier": "gold"})
        assert [o.name for o in scoped.items] == ["a"]
        assert (await store.list("Dataset", label_selector={"app": "none"})).items == []
        assert [o.kind for o in (await store.list("Model")).items] == ["Model"]
        assert (await store.list("Dataset", "empty")).items == []

    # -- update / update_status ------------------------------------------------------------

    async def test_update_generation_conflict_and_last_write_wins(
        self, store: ResourceStore
    ) -> None:
        created = await store.create(dataset())
        relabelled = created.clone()
        relabelled.labels = {"tier": "gold"}
        relabelled.annotations = {"a": "b"}
        v2 = await store.update(relabelled)
        assert v2.generation == 1  # metadata only
        assert v2.labels == {"tier": "gold"}
        assert version(v2.resource_version) > version(created.resource_version)
        respec = v2.clone()
        respec.spec["format"] = "csv"
        v3 = await store.update(respec)
        assert v3.generation == 2
        assert v3.spec["format"] == "csv"
        assert v3.uid == created.uid
        assert v3.creation_timestamp == created.creation_timestamp
        with pytest.raises(ConflictError) as info:
            await store.update(created)  # stale version
        assert info.value.expected == created.resource_version
        assert info.value.actual == v3.resource_version
        blind = dataset()
        blind.spec["nodeName"] = "edge-2"
        v4 = await store.update(blind)  # empty version: last write wins
        assert v4.spec["nodeName"] == "edge-2"
        assert v4.generation == 3
        assert await store.get("Dataset", "default", "d1") == v4
        with pytest.raises(NotFoundError):
            await store.update(dataset("ghost"))

    async def test_update_never_writes_status_and_update_status_only_status(
        self, store: ResourceStore
    ) -> None:
        created = await store.create(dataset())
        with_status = created.clone()
        with_status.status = {"phase": "Running", "numberOfSamples": 3}
        with_status.labels = {"ignored": "yes"}
        with_status.spec["format"] = "ignored"
        s1 = await store.update_status(with_status)
        assert s1.status == {"phase": "Running", "numberOfSamples": 3}
        assert s1.labels == {}
        assert s1.spec["format"] == "txt"
        assert s1.generation == 1
        assert version(s1.resource_version) > version(created.resource_version)
        meta = s1.clone()
        meta.status = {"phase": "Clobbered"}
        meta.labels = {"k": "v"}
        u = await store.update(meta)
        assert u.status == {"phase": "Running", "numberOfSamples": 3}
        assert u.labels == {"k": "v"}
        with pytest.raises(ConflictError):
            await store.update_status(with_status)  # stale
        blind = dataset()
        blind.status = {"phase": "Done"}
        done = await store.update_status(blind)
        assert done.status == {"phase": "Done"}
        assert done.labels == {"k": "v"}
        with pytest.raises(NotFoundError):
            await store.update_status(dataset("ghost"))

    async def test_unchanged_writes_keep_the_version(self, store: ResourceStore) -> None:
        created = await store.create(dataset(app="a"))
        events = store.watch("Dataset", since=created.resource_version)
        try:
            assert await store.update(created.clone()) == created
            assert await store.update(dataset(app="a")) == created  # blind, same content
            assert await store.update_status(created.clone()) == created
            marker = await store.create(dataset("marker"))
            event = await next_change(events)
        finally:
            await aclose(events)
        # No event for the writes that changed nothing: the next one is the marker's.
        assert event.resource_version == marker.resource_version

    async def test_concurrent_status_writers_exactly_one_wins(self, store: ResourceStore) -> None:
        current = await store.create(dataset())
        for round_no in range(3):

            async def write(i: int, base: ResourceObject = current, r: int = round_no) -> Any:
                mine = base.clone()
                mine.status = {"phase": "Running", "writer": i, "round": r}
                return await store.update_status(mine)

            results = await asyncio.gather(*(write(i) for i in range(20)), return_exceptions=True)
            winners = [r for r in results if isinstance(r, ResourceObject)]
            losers = [r for r in results if isinstance(r, ConflictError)]
            assert len(winners) == 1, results
            assert len(losers) == 19, results
            current = await store.get("Dataset", "default", "d1")
            assert current == winners[0]
            assert current.status["round"] == round_no

    async def test_concurrent_creates_exactly_one_wins(self, store: ResourceStore) -> None:
        results = await asyncio.gather(
            *(store.create(dataset("race", app=str(i))) for i in range(10)),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, ResourceObject)]
        assert len(winners) == 1, results
        assert all(isinstance(r, AlreadyExistsError) for r in results if r is not winners[0])
        assert (await store.get("Dataset", "default", "race")) == winners[0]

    # -- delete and finalizers -------------------------------------------------------------

    async def test_delete_plain_and_preconditions(self, store: ResourceStore) -> None:
        plain = await store.create(dataset("plain"))
        changed = plain.clone()
        changed.labels = {"v": "2"}
        changed = await store.update(changed)
        with pytest.raises(ConflictError):
            await store.delete(
                "Dataset", "default", "plain", resource_version=plain.resource_version
            )
        gone = await store.delete(
            "Dataset", "default", "plain", resource_version=changed.resource_version
        )
        assert gone.name == "plain"
        assert gone.uid == plain.uid
        with pytest.raises(NotFoundError):
            await store.get("Dataset", "default", "plain")
        with pytest.raises(NotFoundError):
            await store.delete("Dataset", "default", "plain")
        # The name can be used again: a new object.
        again = await store.create(dataset("plain"))
        assert again.uid != plain.uid

    async def test_finalizers_delay_deletion_until_released(self, store: ResourceStore) -> None:
        held = dataset("held")
        held.finalizers = ["sedna.io/cleanup", "sedna.io/other"]
        created = await store.create(held)
        marked = await store.delete("Dataset", "default", "held")
        assert marked.deletion_timestamp is not None
        assert version(marked.resource_version) > version(created.resource_version)
        again = await store.delete("Dataset", "default", "held")
        assert again.resource_version == marked.resource_version  # no-op
        assert again.deletion_timestamp == marked.deletion_timestamp
        stored = await store.get("Dataset", "default", "held")
        assert stored.deletion_timestamp is not None
        assert (await store.list("Dataset")).items == [stored]
        late = stored.clone()
        late.finalizers = [*stored.finalizers, "sedna.io/late"]
        with pytest.raises(InvalidObjectError) as info:
            await store.update(late)  # no new finalizers once deletion started
        assert info.value.field == "metadata.finalizers"
        assert await store.get("Dataset", "default", "held") == stored
        one_left = stored.clone()
        one_left.finalizers = ["sedna.io/other"]
        still = await store.update(one_left)
        assert still.finalizers == ["sedna.io/other"]
        assert (await store.get("Dataset", "default", "held")).deletion_timestamp is not None
        released = still.clone()
        released.finalizers = []
        await store.update(released)
        with pytest.raises(NotFoundError):
            await store.get("Dataset", "default", "held")
        assert (await store.list("Dataset")).items == []

    # -- watch -----------------------------------------------------------------------------

    async def test_watch_since_list_delivers_every_change_in_order(
        self, store: ResourceStore
    ) -> None:
        await store.create(dataset("before"))
        listed = await store.list("Dataset")
        events = store.watch("Dataset", since=listed.resource_version)
        try:
            a = await store.create(dataset("a"))
            a2 = a.clone()
            a2.spec["format"] = "csv"
            a2 = await store.update(a2)
            a3 = a2.clone()
            a3.status = {"phase": "Ready"}
            a3 = await store.update_status(a3)
            deleted = await store.delete("Dataset", "default", "a")
            seen = [await next_change(events) for _ in range(4)]
        finally:
            await aclose(events)
        assert [e.type for e in seen] == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]
        assert all(e.object is not None and e.object.name == "a" for e in seen)
        assert [e.resource_version for e in seen[:3]] == [
            a.resource_version,
            a2.resource_version,
            a3.resource_version,
        ]
        assert [e.object.resource_version for e in seen[:3]] == [
            e.resource_version for e in seen[:3]
        ]
        assert seen[1].object.spec["format"] == "csv"
        assert seen[2].object.status == {"phase": "Ready"}
        assert seen[3].object.uid == deleted.uid
        versions = [version(e.resource_version) for e in seen]
        assert versions == sorted(set(versions))
        assert versions[0] > version(listed.resource_version)

    async def test_watch_exactly_once_under_many_writes(self, store: ResourceStore) -> None:
        since = (await store.list("Dataset")).resource_version
        events = store.watch("Dataset", since=since)
        try:
            current = await store.create(dataset("hot"))
            expected = [current.resource_version]

            async def bump(i: int) -> None:
                obj = dataset("hot")
                obj.status = {"count": i}
                expected.append((await store.update_status(obj)).resource_version)

            for i in range(10):
                await bump(i)
            # Concurrent writers too: every successful write is delivered once.
            await asyncio.gather(*(store.create(dataset(f"c{i}")) for i in range(10)))
            sentinel = await store.create(dataset("sentinel"))
            seen: list[WatchEvent] = []
            while True:
                event = await next_change(events)
                seen.append(event)
                if event.object is not None and event.object.name == "sentinel":
                    break
        finally:
            await aclose(events)
        versions = [e.resource_version for e in seen]
        assert len(versions) == len(set(versions)) == 22
        assert [version(v) for v in versions] == sorted(version(v) for v in versions)
        hot = [e.resource_version for e in seen if e.object.name == "hot"]
        assert hot == expected
        assert {e.object.name for e in seen if e.type == "ADDED"} == (
            {f"c{i}" for i in range(10)} | {"hot", "sentinel"}
        )
        assert seen[-1].resource_version == sentinel.resource_version

    async def test_watch_resume_from_an_event_version(self, store: ResourceStore) -> None:
        since = (await store.list("Dataset")).resource_version
        first = await store.create(dataset("x"))
        second = await store.create(dataset("y"))
        events = store.watch("Dataset", since=first.resource_version)
        try:
            event = await next_change(events)
            third = await store.create(dataset("z"))
            following = await next_change(events)
        finally:
            await aclose(events)
        assert event.object.name == "y"
        assert event.resource_version == second.resource_version
        assert following.resource_version == third.resource_version
        # From the original list version the whole history replays.
        replay = store.watch("Dataset", since=since)
        try:
            names = [(await next_change(replay)).object.name for _ in range(3)]
        finally:
            await aclose(replay)
        assert names == ["x", "y", "z"]

    async def test_watch_from_now_skips_the_past(self, store: ResourceStore) -> None:
        await store.create(dataset("old"))
        events = store.watch("Dataset")
        try:
            # The watch starts when first awaited: write probes until one is seen, so the
            # test does not depend on when "now" was taken.
            pending = asyncio.ensure_future(next_change(events))
            probe = await store.create(dataset("probe", n="0"))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + EVENT_LIMIT_S
            n = 0
            while not pending.done():
                assert loop.time() < deadline, "the watch saw no probe write"
                done, _ = await asyncio.wait({pending}, timeout=0.05)
                if not done:
                    n += 1
                    probe.labels = {"n": str(n)}
                    probe = await store.update(probe)
            event = pending.result()
        finally:
            await aclose(events)
        assert event.object.name == "probe"

    async def test_watch_filters_kind_and_namespace(self, store: ResourceStore) -> None:
        since = (await store.list("Dataset")).resource_version
        team = store.watch("Dataset", namespace="team", since=since)
        every = store.watch(since=since)
        try:
            await store.create(dataset("skip", namespace="default"))
            await store.create(model("m-team", namespace="team"))
            await store.create(dataset("x", namespace="team"))
            got = await next_change(team)
            seen = [await next_change(every) for _ in range(3)]
        finally:
            await aclose(team)
            await aclose(every)
        assert got.type == "ADDED"
        assert (got.object.kind, got.object.namespace, got.object.name) == ("Dataset", "team", "x")
        if self.per_kind_watch_order is None:
            assert [e.object.kind for e in seen] == ["Dataset", "Model", "Dataset"]
        else:  # only each kind's own order is promised
            assert sorted(e.object.kind for e in seen) == ["Dataset", "Dataset", "Model"]
        datasets = [e for e in seen if e.object.kind == "Dataset"]
        assert [e.object.name for e in datasets] == ["skip", "x"]
        assert version(datasets[0].resource_version) < version(datasets[1].resource_version)

    async def test_watch_finalizer_flow_events(self, store: ResourceStore) -> None:
        since = (await store.list("Dataset")).resource_version
        events = store.watch("Dataset", since=since)
        try:
            held = dataset("held")
            held.finalizers = ["sedna.io/cleanup"]
            await store.create(held)
            marked = await store.delete("Dataset", "default", "held")
            released = marked.clone()
            released.finalizers = []
            await store.update(released)
            seen = [await next_change(events) for _ in range(3)]
        finally:
            await aclose(events)
        assert [e.type for e in seen] == ["ADDED", "MODIFIED", "DELETED"]
        assert seen[0].object.deletion_timestamp is None
        assert seen[1].object.deletion_timestamp is not None
        assert seen[2].object.name == "held"

    async def test_watch_from_forgotten_version_raises_gone(self, store: ResourceStore) -> None:
        old = (await store.list("Dataset")).resource_version
        await store.create(dataset())
        await self.expire_history(store)
        with pytest.raises(GoneError, match="re-list"):
            await next_change(store.watch("Dataset", since=old))
        # A fresh list gives a version that works again.
        fresh = (await store.list("Dataset")).resource_version
        events = store.watch("Dataset", since=fresh)
        try:
            await store.create(dataset("after"))
            assert (await next_change(events)).object.name == "after"
        finally:
            await aclose(events)

    async def test_close_ends_watches(self, store: ResourceStore) -> None:
        since = (await store.list("Dataset")).resource_version
        events = store.watch(since=since)
        await store.create(dataset())
        assert (await next_change(events)).object.name == "d1"
        pending = asyncio.ensure_future(next_change(events))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await store.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(pending, 3)
        assert loop.time() - started < 3
