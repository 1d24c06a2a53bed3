"""KubernetesResourceStore through the real ``kubernetes`` client against an API emulator.

Every call goes over HTTP on 127.0.0.1 to ``tests/support/k8s_emulator.py``: kmock's
``KubernetesEmulator`` (server, URL parsing, discovery, Status errors, object storage) extended
with what a real API server does and kmock leaves out: resourceVersion/uid/generation, PUT with
409 Conflict on a stale version, the status subresource, finalizers and deletionTimestamp,
label selectors, watch from a version with 410 Gone after compaction, timeoutSeconds and
bookmarks, CRDs that make resources served. The module docstring there lists it exactly.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import kmock
import pytest

from sedna.resources.objects import OwnerRef, ResourceObject
from sedna_gm.store import (
    AlreadyExistsError,
    ConflictError,
    GoneError,
    InvalidObjectError,
    NotFoundError,
    ResourceStore,
    StoreUnavailableError,
    WatchEvent,
    WatchEventType,
)
from sedna_gm.store.kubernetes import (
    KubernetesResourceStore,
    MissingCRDsError,
    kubernetes_client_from_config,
)

DATASETS = kmock.resource("sedna.io", "v1alpha1", "datasets")


def dataset(name: str = "d1", namespace: str = "default", **labels: str) -> ResourceObject:
    return ResourceObject(
        kind="Dataset",
        name=name,
        namespace=namespace,
        labels=dict(labels),
        spec={"url": "/data/train.txt", "format": "txt", "nodeName": "edge-1"},
    )


async def next_event(it: Any, limit_s: float = 5.0) -> WatchEvent:
    event: WatchEvent = await asyncio.wait_for(anext(it), limit_s)
    return event


async def next_change(it: Any, limit_s: float = 5.0) -> WatchEvent:
    """Next non-BOOKMARK event."""
    while True:
        event = await next_event(it, limit_s)
        if event.type is not WatchEventType.BOOKMARK:
            return event


async def wait_for_watches(cluster: Any, count: int, limit_s: float = 5.0) -> None:
    """Wait until the emulator has received ``count`` watch requests (the stream is open)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while sum(1 for r in cluster.emulator if r.params.get("watch") == "true") < count:
        if loop.time() > deadline:
            raise AssertionError(f"no {count} watch request(s) within {limit_s} s")
        await asyncio.sleep(0.01)


def test_is_a_resource_store(store: KubernetesResourceStore) -> None:
    assert isinstance(store, ResourceStore)


async def test_create_sets_server_fields_and_get_round_trips(
    store: KubernetesResourceStore,
) -> None:
    obj = dataset(app="a")
    obj.annotations = {"note": "x"}
    obj.finalizers = ["sedna.io/cleanup"]
    obj.owner_references = [OwnerRef("sedna.io/v1alpha1", "Model", "m", "uid-1", controller=True)]
    obj.status = {"phase": "ignored"}
    created = await store.create(obj)
    assert created.uid
    assert created.resource_version
    assert created.generation == 1
    assert created.creation_timestamp is not None
    assert created.creation_timestamp.tzinfo is not None
    assert created.status == {}
    got = await store.get("Dataset", "default", "d1")
    assert got == created
    assert got.labels == {"app": "a"}
    assert got.annotations == {"note": "x"}
    assert got.finalizers == ["sedna.io/cleanup"]
    assert got.owner_references == obj.owner_references
    with pytest.raises(AlreadyExistsError, match="already exists"):
        await store.create(dataset())
    with pytest.raises(NotFoundError, match="Dataset default/nope not found"):
        await store.get("Dataset", "default", "nope")


async def test_list_namespaces_selectors_and_sorting(store: KubernetesResourceStore) -> None:
    await store.create(dataset("b", app="x"))
    await store.create(dataset("a", app="y"))
    await store.create(dataset("c", namespace="other", app="x"))
    everywhere = await store.list("Dataset")
    assert [o.name for o in everywhere.items] == ["a", "b", "c"]
    assert everywhere.resource_version == max(o.resource_version for o in everywhere.items)
    assert [o.name for o in (await store.list("Dataset", "default")).items] == ["a", "b"]
    selected = await store.list("Dataset", label_selector={"app": "x"})
    assert [o.name for o in selected.items] == ["b", "c"]
    assert (await store.list("Model")).items == []


async def test_update_generation_conflict_and_last_write_wins(
    store: KubernetesResourceStore,
) -> None:
    created = await store.create(dataset())
    relabelled = created.clone()
    relabelled.labels = {"tier": "gold"}
    v2 = await store.update(relabelled)
    assert v2.generation == 1  # metadata only
    assert int(v2.resource_version) > int(created.resource_version)
    respec = v2.clone()
    respec.spec["format"] = "csv"
    v3 = await store.update(respec)
    assert v3.generation == 2
    assert v3.spec["format"] == "csv"
    with pytest.raises(ConflictError) as info:
        await store.update(created)  # stale version
    assert info.value.expected == created.resource_version
    assert info.value.actual == v3.resource_version
    blind = dataset()
    blind.spec["nodeName"] = "edge-2"
    v4 = await store.update(blind)  # empty version: read-modify-write
    assert v4.spec["nodeName"] == "edge-2"
    assert v4.generation == 3
    with pytest.raises(NotFoundError):
        await store.update(dataset("ghost"))


async def test_update_never_writes_status_and_update_status_only_status(
    store: KubernetesResourceStore,
) -> None:
    created = await store.create(dataset())
    with_status = created.clone()
    with_status.status = {"phase": "Running", "numberOfSamples": 3}
    with_status.labels = {"ignored": "yes"}
    s1 = await store.update_status(with_status)
    assert s1.status == {"phase": "Running", "numberOfSamples": 3}
    assert s1.labels == {}
    assert s1.generation == 1
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
    assert (await store.update_status(blind)).status == {"phase": "Done"}


async def test_update_without_version_retries_on_conflict(
    store: KubernetesResourceStore, cluster: Any
) -> None:
    await store.create(dataset())
    # One scripted 409 on the first PUT (kmock reaction), then the server's own behaviour.
    conflict = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": "Conflict",
        "code": 409,
        "message": "the object has been modified",
    }
    cluster.emulator["put", DATASETS][:1] << kmock.Response(status=409, payload=conflict)
    blind = dataset()
    blind.spec["format"] = "csv"
    updated = await store.update(blind)
    assert updated.spec["format"] == "csv"
    puts = [r for r in list(cluster.emulator) if r.method == "PUT"]
    assert len(puts) == 2


async def test_delete_plain_with_finalizers_and_preconditions(
    store: KubernetesResourceStore,
) -> None:
    plain = await store.create(dataset("plain"))
    with pytest.raises(ConflictError):
        await store.delete("Dataset", "default", "plain", resource_version="1")
    gone = await store.delete(
        "Dataset", "default", "plain", resource_version=plain.resource_version
    )
    assert gone.name == "plain"
    with pytest.raises(NotFoundError):
        await store.get("Dataset", "default", "plain")
    with pytest.raises(NotFoundError):
        await store.delete("Dataset", "default", "plain")

    held = dataset("held")
    held.finalizers = ["sedna.io/cleanup"]
    await store.create(held)
    marked = await store.delete("Dataset", "default", "held")
    assert marked.deletion_timestamp is not None
    again = await store.delete("Dataset", "default", "held")
    assert again.resource_version == marked.resource_version  # no-op
    assert (await store.get("Dataset", "default", "held")).deletion_timestamp is not None
    released = marked.clone()
    released.finalizers = []
    await store.update(released)
    with pytest.raises(NotFoundError):
        await store.get("Dataset", "default", "held")


async def test_watch_since_list_delivers_every_change_in_order(
    store: KubernetesResourceStore,
) -> None:
    await store.create(dataset("before"))
    listed = await store.list("Dataset")
    events = store.watch("Dataset", since=listed.resource_version)
    try:
        a = await store.create(dataset("a"))
        a2 = a.clone()
        a2.spec["format"] = "csv"
        await store.update(a2)
        await store.delete("Dataset", "default", "a")
        seen = [await next_change(events) for _ in range(3)]
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    assert [e.type for e in seen] == ["ADDED", "MODIFIED", "DELETED"]
    assert all(e.object is not None and e.object.name == "a" for e in seen)
    versions = [int(e.resource_version) for e in seen]
    assert versions == sorted(versions)
    assert versions[0] > int(listed.resource_version)


async def test_watch_from_now_namespace_filter_and_resume(
    store: KubernetesResourceStore, cluster: Any
) -> None:
    await store.create(dataset("old"))
    events = store.watch("Dataset", namespace="team")
    try:
        first = asyncio.ensure_future(anext(events))
        await wait_for_watches(cluster, 1)
        await store.create(dataset("skip", namespace="default"))
        await store.create(dataset("x", namespace="team"))
        event = await asyncio.wait_for(first, 5)
        while event.type is WatchEventType.BOOKMARK:
            event = await next_event(events)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    assert event.type == "ADDED"
    assert event.object is not None
    assert event.object.name == "x"
    # Resume after that event: only later changes arrive.
    resumed = store.watch("Dataset", namespace="team", since=event.resource_version)
    try:
        await store.create(dataset("y", namespace="team"))
        later = await next_change(resumed)
    finally:
        await resumed.aclose()  # type: ignore[attr-defined]
    assert later.object is not None
    assert later.object.name == "y"


async def test_watch_survives_server_timeouts_and_emits_bookmarks(
    store: KubernetesResourceStore, cluster: Any
) -> None:
    since = (await store.list("Dataset")).resource_version
    events = store.watch("Dataset", since=since)
    try:
        bookmark = await next_event(events, limit_s=6)  # the 2 s stream ends with a bookmark
        assert bookmark.type is WatchEventType.BOOKMARK
        assert bookmark.object is None
        await store.create(dataset("after-reconnect"))
        event = await next_change(events)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    assert event.object is not None
    assert event.object.name == "after-reconnect"
    watches = [r for r in list(cluster.emulator) if r.params.get("watch") == "true"]
    assert len(watches) >= 2
    assert all(r.params.get("timeoutSeconds") == "2" for r in watches)


async def test_watch_from_compacted_version_raises_gone(
    store: KubernetesResourceStore, cluster: Any
) -> None:
    old = (await store.list("Dataset")).resource_version
    await store.create(dataset())
    cluster.emulator.compact()
    with pytest.raises(GoneError, match="re-list"):
        await next_event(store.watch("Dataset", since=old))


async def test_watch_every_kind_and_close_ends_it(store: KubernetesResourceStore) -> None:
    since = (await store.list("Dataset")).resource_version
    events = store.watch(since=since)
    await store.create(ResourceObject(kind="Model", name="m1", spec={"url": "/m", "format": "pb"}))
    await store.create(dataset())
    got = {(await next_change(events)).object.kind for _ in range(2)}  # type: ignore[union-attr]
    assert got == {"Model", "Dataset"}
    loop = asyncio.get_running_loop()
    started = loop.time()
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await next_event(events)
    assert loop.time() - started < 3


async def test_invalid_name_is_422_with_field(store: KubernetesResourceStore) -> None:
    with pytest.raises(InvalidObjectError) as info:
        await store.create(dataset("Not_Valid"))
    assert info.value.field == "metadata.name"
    assert "metadata.name" in str(info.value)


async def test_scripted_422_names_the_field(store: KubernetesResourceStore, cluster: Any) -> None:
    invalid = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": "Invalid",
        "code": 422,
        "message": 'Dataset.sedna.io "d1" is invalid: spec.format: Unsupported value: "zip"',
        "details": {
            "name": "d1",
            "kind": "Dataset",
            "causes": [
                {
                    "reason": "FieldValueNotSupported",
                    "field": "spec.format",
                    "message": 'Unsupported value: "zip"',
                },
                {"reason": "FieldValueRequired", "field": "spec.url", "message": "Required"},
            ],
        },
    }
    cluster.emulator["post", DATASETS] << kmock.Response(status=422, payload=invalid)
    with pytest.raises(InvalidObjectError) as info:
        await store.create(dataset())
    assert info.value.field == "spec.format"
    assert str(info.value).startswith('spec.format: Unsupported value: "zip"')
    assert "spec.url" in str(info.value)


async def test_unknown_kind_and_api_version_are_invalid(store: KubernetesResourceStore) -> None:
    with pytest.raises(InvalidObjectError, match="kind"):
        await store.get("Nope", "default", "x")
    bad = dataset()
    bad.api_version = "sedna.io/v2"
    with pytest.raises(InvalidObjectError, match="apiVersion"):
        await store.create(bad)


async def test_server_errors_are_unavailable_without_token(
    store: KubernetesResourceStore, cluster: Any
) -> None:
    cluster.emulator["get", DATASETS] << kmock.Response(
        status=503, payload={"kind": "Status", "message": "etcd down"}
    )
    with pytest.raises(StoreUnavailableError, match="etcd down") as info:
        await store.get("Dataset", "default", "d1")
    assert cluster.token not in str(info.value)
    sent = [r for r in list(cluster.emulator) if r.method == "GET"]
    assert sent[-1].headers["Authorization"] == f"Bearer {cluster.token}"


async def test_missing_crds_is_a_clear_error(
    emulated_api_server: Any, crd_paths: list[Path]
) -> None:
    crds = crd_paths
    async with emulated_api_server(crds=crds[:3]) as cluster:
        store = KubernetesResourceStore(cluster.api_client)
        with pytest.raises(MissingCRDsError) as info:
            await store.start()
    message = str(info.value)
    assert "models.sedna.io" in message
    assert "datasets.sedna.io" not in info.value.missing
    assert "kubectl apply -f crds/" in message
    assert len(info.value.missing) == len(crds) - 3


async def test_connection_refused_is_unavailable() -> None:
    from kubernetes import client as k8s_client

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    configuration = k8s_client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    configuration.api_key = {"authorization": "Bearer s3cret-token"}
    configuration.retries = 0
    api_client = k8s_client.ApiClient(configuration)
    store = KubernetesResourceStore(api_client)
    try:
        with pytest.raises(StoreUnavailableError, match="unreachable") as info:
            await store.start()
        assert "s3cret-token" not in str(info.value)
        with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{port}"):
            await store.get("Dataset", "default", "x")
    finally:
        api_client.close()


async def test_client_from_kubeconfig(cluster: Any, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        f"""
apiVersion: v1
kind: Config
clusters:
- name: emu
  cluster: {{server: "{cluster.host}"}}
users:
- name: gm
  user: {{token: kube-token-123}}
contexts:
- name: sedna
  context: {{cluster: emu, user: gm, namespace: default}}
current-context: sedna
"""
    )
    api_client = kubernetes_client_from_config(str(kubeconfig), "sedna", in_cluster=False)
    try:
        store = KubernetesResourceStore(api_client)
        await store.start()
        await store.create(dataset())
        assert list(cluster.emulator)[-1].headers["Authorization"] == "Bearer kube-token-123"
    finally:
        api_client.close()
    with pytest.raises(StoreUnavailableError, match="kubeconfig"):
        kubernetes_client_from_config(str(tmp_path / "missing"), None, in_cluster=False)
    with pytest.raises(StoreUnavailableError, match="in-cluster"):
        kubernetes_client_from_config(None, None, in_cluster=True)
