"""KubernetesResourceStore behaviour that only the Kubernetes adapter has.

The port's semantics (CRUD, conflicts, finalizers, watch order, 410 Gone) are the shared
contract, run against this adapter in ``test_k8s_contract.py``. Here: what goes over the wire
and what only a Kubernetes API server does, through the real ``kubernetes`` client over HTTP on
127.0.0.1 to ``tests/support/k8s_emulator.py`` (kmock's ``KubernetesEmulator`` extended with
the API-server behaviour the module docstring there lists): the status subresource, owner
references and finalizers in Kubernetes JSON, deletion preconditions and ``markAsDeleting``,
retries of blind updates, watch reconnects, bookmarks and 410 on resume, Status errors, missing
CRDs and namespaces, credentials. (Kubeconfig loading: ``test_k8s_factory.py``.)
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

import kmock
import pytest

from sedna.resources.objects import OwnerRef
from sedna_gm.store import (
    GoneError,
    InvalidObjectError,
    StoreUnavailableError,
    WatchEvent,
    WatchEventType,
)
from sedna_gm.store.kubernetes import KubernetesResourceStore, MissingCRDsError

contract = sys.modules["sedna_store_contract"]  # loaded by conftest.py
dataset = contract.dataset
next_change = contract.next_change

DATASETS = kmock.resource("sedna.io", "v1alpha1", "datasets")


async def next_event(it: Any, limit_s: float = 5.0) -> WatchEvent:
    """The next event, BOOKMARKs included."""
    event: WatchEvent = await asyncio.wait_for(anext(it), limit_s)
    return event


def requests(cluster: Any, method: str) -> list[Any]:
    """The requests the emulator received with this HTTP method, oldest first."""
    return [r for r in list(cluster.emulator) if r.method == method]


def stored(cluster: Any, name: str, namespace: str = "default") -> dict[str, Any]:
    """The raw JSON the emulated API server holds for a Dataset."""
    raw: dict[str, Any] = cluster.emulator.objects[DATASETS, namespace, name].raw
    return raw


async def test_objects_travel_as_kubernetes_json(
    store: KubernetesResourceStore, cluster: Any
) -> None:
    obj = dataset(app="a")
    obj.finalizers = ["sedna.io/cleanup"]
    obj.owner_references = [OwnerRef("sedna.io/v1alpha1", "Model", "m", "uid-1", controller=True)]
    obj.status = {"phase": "ignored"}
    created = await store.create(obj)
    post = requests(cluster, "POST")[-1]
    assert "status" not in post.data  # the status subresource owns it
    assert not {"uid", "resourceVersion"} & set(post.data["metadata"])
    meta = stored(cluster, "d1")["metadata"]
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "sedna.io/v1alpha1",
            "kind": "Model",
            "name": "m",
            "uid": "uid-1",
            "controller": True,
        }
    ]
    assert meta["finalizers"] == ["sedna.io/cleanup"]
    assert meta["labels"] == {"app": "a"}
    assert (meta["uid"], meta["resourceVersion"]) == (created.uid, created.resource_version)


async def test_status_goes_through_the_status_subresource(
    store: KubernetesResourceStore, cluster: Any
) -> None:
    created = await store.create(dataset())
    with_status = created.clone()
    with_status.status = {"phase": "Running"}
    await store.update_status(with_status)
    relabelled = (await store.get("Dataset", "default", "d1")).clone()
    relabelled.labels = {"k": "v"}
    await store.update(relabelled)
    puts = requests(cluster, "PUT")
    assert [r.subresource for r in puts] == ["status", None]
    assert puts[0].data["status"] == {"phase": "Running"}
    assert "status" not in puts[1].data  # update never sends status
    assert stored(cluster, "d1")["status"] == {"phase": "Running"}


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
    puts = requests(cluster, "PUT")
    assert len(puts) == 2
    # Custom resources need a version on replace: each attempt sends the one it just read.
    assert all(r.data["metadata"]["resourceVersion"] for r in puts)


async def test_deletion_as_the_api_server_does_it(
    store: KubernetesResourceStore, cluster: Any
) -> None:
    held = dataset("held")
    held.finalizers = ["sedna.io/cleanup"]
    created = await store.create(held)
    events = store.watch("Dataset", since=created.resource_version)
    try:
        marked = await store.delete(
            "Dataset", "default", "held", resource_version=created.resource_version
        )
        assert stored(cluster, "held")["metadata"]["deletionGracePeriodSeconds"] == 0
        released = marked.clone()
        released.finalizers = []
        answer = await store.update(released)
        seen = [await next_change(events) for _ in range(2)]
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    delete = requests(cluster, "DELETE")[-1]
    assert delete.data["preconditions"] == {"resourceVersion": created.resource_version}
    # markAsDeleting: the first deletion mark bumps generation (desired state changed).
    assert marked.generation == created.generation + 1
    assert [e.type for e in seen] == ["MODIFIED", "DELETED"]
    # Releasing the last finalizer deletes in one revision (the registry's
    # deleteWithoutFinalizers): the PUT answers with the object it was sent, the DELETED event
    # carries the last stored state, finalizer included.
    assert answer.finalizers == []
    assert seen[1].object.finalizers == ["sedna.io/cleanup"]
    assert int(seen[1].resource_version) == int(seen[0].resource_version) + 1


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
    assert all(r.params.get("allowWatchBookmarks") == "true" for r in watches)


async def test_watch_resumes_after_a_cut_and_ends_with_gone_once_compacted(
    cluster: Any,
) -> None:
    # Streams long enough that no timeout bookmark moves the watch's version during the test.
    store = KubernetesResourceStore(cluster.api_client, watch_timeout_s=60)
    since = (await store.list("Dataset")).resource_version
    events = store.watch("Dataset", namespace="team", since=since)
    try:
        await store.create(dataset("a", namespace="team"))
        assert (await next_change(events)).object.name == "a"
        # A cut stream (API server restart) resumes from the last version seen: no loss.
        await cluster.emulator.end_watches()
        await store.create(dataset("b", namespace="team"))
        assert (await next_change(events)).object.name == "b"
        # Writes the namespace filter hides leave the watch's version behind; once they are
        # compacted away, the next resume gets 410 and the consumer must re-list.
        await store.create(dataset("elsewhere"))
        cluster.emulator.compact()
        await cluster.emulator.end_watches()
        with pytest.raises(GoneError, match="re-list"):
            await next_change(events)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
        await store.close()


async def test_create_in_a_missing_namespace_names_it(store: KubernetesResourceStore) -> None:
    with pytest.raises(InvalidObjectError, match='namespace "nowhere" does not exist') as info:
        await store.create(dataset(namespace="nowhere"))
    assert info.value.field == "metadata.namespace"
    assert "kubectl create namespace nowhere" in str(info.value)


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
        # Unchecked, a write of a kind the cluster does not serve says so (not "not found").
        with pytest.raises(StoreUnavailableError, match="does not serve Model"):
            await store.create(contract.model())
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
