"""ResourceService over real loopback gRPC, on the in-memory double and the SQLite store."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc
import pytest
from support.memory_store import MemoryStore

from sedna.api.gm.v1 import resource_service_pb2 as pb
from sedna.resources.wire import resource_from_proto
from sedna_gm.api.resource_servicer import FIELD_VIOLATIONS_METADATA_KEY


def dataset(name: str, url: str = "/data/train.txt", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sedna.io/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name, **meta},
        "spec": {"url": url, "format": "txt", "nodeName": "edge0"},
    }


def model(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "sedna.io/v1alpha1",
        "kind": "Model",
        "metadata": {"name": name},
        "spec": {"url": "/model/frozen.pb", "format": "pb"},
    }


def apply_req(manifest: dict[str, Any], **kw: Any) -> pb.ApplyRequest:
    return pb.ApplyRequest(manifest_json=json.dumps(manifest).encode(), **kw)


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def eventually(predicate: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_apply_create_unchanged_configured(store: Any, serve: Any) -> None:
    _, stub = await serve(store)
    first = await stub.Apply(apply_req(dataset("ds1")))
    assert first.created
    assert first.spec_changed
    assert first.resource.metadata.namespace == "default"
    assert first.resource.metadata.generation == 1
    again = await stub.Apply(apply_req(dataset("ds1")))
    assert not again.created
    assert not again.spec_changed
    assert again.resource.metadata.resource_version == first.resource.metadata.resource_version
    relabel = await stub.Apply(apply_req(dataset("ds1", labels={"team": "a"})))
    assert not relabel.spec_changed
    assert relabel.resource.metadata.resource_version != first.resource.metadata.resource_version
    assert dict(relabel.resource.metadata.labels) == {"team": "a"}
    respec = await stub.Apply(apply_req(dataset("ds1", url="/data/other.txt")))
    assert respec.spec_changed
    assert respec.resource.metadata.generation == 2
    obj = resource_from_proto(respec.resource)
    assert obj.spec["url"] == "/data/other.txt"
    assert obj.labels == {}  # the manifest replaces labels


async def test_apply_keeps_status(store: Any, serve: Any) -> None:
    _, stub = await serve(store)
    created = resource_from_proto((await stub.Apply(apply_req(dataset("ds1")))).resource)
    created.status = {"numberOfSamples": 3}
    await store.update_status(created)
    again = await stub.Apply(apply_req(dataset("ds1", url="/x.txt")))
    assert resource_from_proto(again.resource).status == {"numberOfSamples": 3}


async def test_dry_run_writes_nothing(store: Any, serve: Any) -> None:
    _, stub = await serve(store)
    reply = await stub.Apply(apply_req(dataset("ds1"), dry_run=True))
    assert reply.created
    err = await rpc_error(stub.Get(pb.GetRequest(kind="dataset", name="ds1")))
    assert err.code() is grpc.StatusCode.NOT_FOUND


async def test_invalid_manifest_lists_field_paths(store: Any, serve: Any) -> None:
    _, stub = await serve(store)
    bad = dataset("ds1")
    del bad["spec"]["url"]
    bad["spec"]["format"] = 7
    err = await rpc_error(stub.Apply(apply_req(bad)))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "Dataset default/ds1 is invalid" in (err.details() or "")
    assert "spec.url: Required value" in (err.details() or "")
    trailer = dict(err.trailing_metadata() or ())
    fields = {v["field"] for v in json.loads(trailer[FIELD_VIOLATIONS_METADATA_KEY])}
    assert {"spec.url", "spec.format"} <= fields


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"{not json", "manifest_json: not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b"", "manifest_json: Required value"),
        (b"\xff\xfe", "manifest_json: not UTF-8"),
        (
            json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}).encode(),
            "only sedna.io/v1alpha1 kinds are served",
        ),
        (
            json.dumps({**dataset("d"), "kind": "datasets"}).encode(),
            'did you mean "Dataset"',
        ),
    ],
)
async def test_apply_rejects_bad_payloads(
    memory_store: Any, serve: Any, payload: bytes, expected: str
) -> None:
    _, stub = await serve(memory_store)
    err = await rpc_error(stub.Apply(pb.ApplyRequest(manifest_json=payload)))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert expected in (err.details() or "")


async def test_expected_resource_version_conflict(store: Any, serve: Any) -> None:
    _, stub = await serve(store)
    first = await stub.Apply(apply_req(dataset("ds1")))
    await stub.Apply(apply_req(dataset("ds1", url="/y.txt")))
    stale = first.resource.metadata.resource_version
    err = await rpc_error(
        stub.Apply(apply_req(dataset("ds1", url="/z.txt"), expected_resource_version=stale))
    )
    assert err.code() is grpc.StatusCode.ABORTED
    assert "re-read" in (err.details() or "")
    err = await rpc_error(
        stub.Delete(pb.DeleteRequest(kind="dataset", name="ds1", expected_resource_version=stale))
    )
    assert err.code() is grpc.StatusCode.ABORTED


async def test_get_by_any_name_and_errors(store: Any, serve: Any) -> None:
    _, stub = await serve(store)
    await stub.Apply(apply_req(dataset("ds1")))
    for kind in ("Dataset", "datasets", "dataset", "DATASET", "datasets.sedna.io"):
        reply = await stub.Get(pb.GetRequest(kind=kind, name="ds1"))
        assert reply.resource.metadata.name == "ds1"
    err = await rpc_error(stub.Get(pb.GetRequest(kind="pods", name="ds1")))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "valid kinds: Dataset" in (err.details() or "")
    assert "JointInferenceService (ji)" in (err.details() or "")
    err = await rpc_error(stub.Get(pb.GetRequest(kind="dataset", name="")))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "name: Required value"
    err = await rpc_error(stub.Get(pb.GetRequest(kind="dataset", name="nope")))
    assert err.code() is grpc.StatusCode.NOT_FOUND
    assert "nope" in (err.details() or "")


async def test_list_pages_filters_and_tokens(store: Any, serve: Any) -> None:
    _, stub = await serve(store)
    for index in range(5):
        await stub.Apply(apply_req(dataset(f"ds{index}", labels={"odd": str(index % 2)})))
    await stub.Apply(apply_req(dataset("other", namespace="team-b")))
    await stub.Apply(apply_req(model("m1")))

    names: list[str] = []
    token = ""
    pages = 0
    version = ""
    while True:
        reply = await stub.List(pb.ListRequest(kind="dataset", page_size=2, page_token=token))
        pages += 1
        names += [f"{r.metadata.namespace}/{r.metadata.name}" for r in reply.resources]
        version = version or reply.resource_version
        assert reply.resource_version == version
        token = reply.next_page_token
        if not token:
            break
    assert pages == 3
    assert names == [f"default/ds{i}" for i in range(5)] + ["team-b/other"]

    reply = await stub.List(pb.ListRequest(kind="dataset", namespace="team-b"))
    assert [r.metadata.name for r in reply.resources] == ["other"]
    reply = await stub.List(pb.ListRequest(kind="datasets", label_selector={"odd": "1"}))
    assert [r.metadata.name for r in reply.resources] == ["ds1", "ds3"]

    first = await stub.List(pb.ListRequest(kind="dataset", page_size=2))
    err = await rpc_error(stub.List(pb.ListRequest(kind="model", page_token=first.next_page_token)))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in (err.details() or "")
    err = await rpc_error(stub.List(pb.ListRequest(kind="dataset", page_token="garbage!")))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    err = await rpc_error(stub.List(pb.ListRequest(kind="dataset", page_size=-1)))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    err = await rpc_error(stub.List(pb.ListRequest(kind="")))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT


async def _next(stream: Any, within: float = 5.0) -> pb.WatchResponse:
    return await asyncio.wait_for(stream.read(), within)


async def test_watch_from_list_version(store: Any, serve: Any) -> None:
    _, stub = await serve(store)
    await stub.Apply(apply_req(dataset("before")))
    listed = await stub.List(pb.ListRequest(kind="dataset"))
    stream = stub.Watch(
        pb.WatchRequest(kind="datasets", resource_version=listed.resource_version), timeout=30
    )
    await stub.Apply(apply_req(model("m1")))  # other kind: filtered out
    await stub.Apply(apply_req(dataset("ds1")))
    await stub.Apply(apply_req(dataset("ds1", url="/new.txt")))
    await stub.Delete(pb.DeleteRequest(kind="dataset", name="ds1"))
    seen = [await _next(stream) for _ in range(3)]
    assert [e.type for e in seen] == [
        pb.EVENT_TYPE_ADDED,
        pb.EVENT_TYPE_MODIFIED,
        pb.EVENT_TYPE_DELETED,
    ]
    assert all(e.resource.metadata.name == "ds1" for e in seen)
    assert seen[-1].resource_version
    stream.cancel()


async def test_watch_without_version_starts_with_current_objects(store: Any, serve: Any) -> None:
    _, stub = await serve(store)
    await stub.Apply(apply_req(dataset("ds1")))
    await stub.Apply(apply_req(model("m1")))
    stream = stub.Watch(pb.WatchRequest(), timeout=30)  # every kind
    initial = {(e.type, e.resource.kind) for e in [await _next(stream), await _next(stream)]}
    assert initial == {(pb.EVENT_TYPE_ADDED, "Dataset"), (pb.EVENT_TYPE_ADDED, "Model")}
    await stub.Apply(apply_req(model("m2")))
    event = await _next(stream)
    assert (event.type, event.resource.metadata.name) == (pb.EVENT_TYPE_ADDED, "m2")
    stream.cancel()


async def test_watch_bookmarks(memory_store: Any, serve: Any) -> None:
    _, stub = await serve(memory_store, bookmark_interval=0.05)
    await stub.Apply(apply_req(dataset("ds1")))
    listed = await stub.List(pb.ListRequest(kind="dataset"))
    stream = stub.Watch(
        pb.WatchRequest(
            kind="dataset", resource_version=listed.resource_version, allow_bookmarks=True
        ),
        timeout=30,
    )
    event = await _next(stream)
    assert event.type == pb.EVENT_TYPE_BOOKMARK
    assert event.resource_version == listed.resource_version
    assert not event.HasField("resource")
    await stub.Apply(apply_req(dataset("ds2")))
    while (event := await _next(stream)).type == pb.EVENT_TYPE_BOOKMARK:
        pass
    assert event.resource.metadata.name == "ds2"
    stream.cancel()


async def test_watch_too_old_is_out_of_range(serve: Any) -> None:
    store = MemoryStore(history=2)
    _, stub = await serve(store)
    for index in range(5):
        await stub.Apply(apply_req(dataset(f"ds{index}")))
    stream = stub.Watch(pb.WatchRequest(kind="dataset", resource_version="1"), timeout=30)
    err = await rpc_error(stream.read())
    assert err.code() is grpc.StatusCode.OUT_OF_RANGE
    assert "list again" in (err.details() or "")


async def test_watch_ends_when_client_cancels(memory_store: Any, serve: Any) -> None:
    _, stub = await serve(memory_store)
    stream = stub.Watch(pb.WatchRequest(kind="dataset", resource_version="0"), timeout=30)
    await stub.Apply(apply_req(dataset("ds1")))
    await _next(stream)
    assert memory_store.active_watches == 1
    stream.cancel()
    await eventually(lambda: memory_store.active_watches == 0)


async def test_delete(store: Any, serve: Any) -> None:
    _, stub = await serve(store)
    await stub.Apply(apply_req(dataset("ds1")))
    reply = await stub.Delete(pb.DeleteRequest(kind="dataset", name="ds1"))
    assert reply.resource.metadata.HasField("deletion_timestamp")
    err = await rpc_error(stub.Get(pb.GetRequest(kind="dataset", name="ds1")))
    assert err.code() is grpc.StatusCode.NOT_FOUND
    err = await rpc_error(stub.Delete(pb.DeleteRequest(kind="dataset", name="ds1")))
    assert err.code() is grpc.StatusCode.NOT_FOUND


async def test_store_unavailable(memory_store: Any, serve: Any) -> None:
    _, stub = await serve(memory_store)
    memory_store.unavailable = True
    err = await rpc_error(stub.List(pb.ListRequest(kind="dataset")))
    assert err.code() is grpc.StatusCode.UNAVAILABLE


async def test_unexpected_error_is_internal_without_traceback(serve: Any) -> None:
    class Broken:
        async def get(self, *args: Any) -> Any:
            raise RuntimeError("secret internals")

    _, stub = await serve(Broken())
    err = await rpc_error(stub.Get(pb.GetRequest(kind="dataset", name="x")))
    assert err.code() is grpc.StatusCode.INTERNAL
    assert "secret internals" not in (err.details() or "")
    assert "Traceback" not in (err.details() or "")


async def test_open_watch_ends_unavailable_when_the_server_drains() -> None:
    from support.servers import loopback_settings

    from sedna.api.gm.v1 import resource_service_pb2_grpc as pb_grpc
    from sedna.runtime import ServiceServer
    from sedna_gm.api.resource_servicer import add_resource_service

    server = ServiceServer(loopback_settings(drain_seconds=30.0))
    add_resource_service(server, MemoryStore())
    await server.start()
    channel = grpc.aio.insecure_channel(server.address)
    try:
        stub = pb_grpc.ResourceServiceStub(channel)
        await stub.Apply(apply_req(dataset("ds1")))
        stream = stub.Watch(pb.WatchRequest(kind="dataset"), timeout=60)
        assert (await _next(stream)).type == pb.EVENT_TYPE_ADDED
        began = time.monotonic()
        await server.stop()
        # Without ending the watch, the drain would wait its full 30 s for the stream.
        assert time.monotonic() - began < 10
        err = await rpc_error(stream.read())
        assert err.code() is grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (err.details() or "")
    finally:
        await channel.close()
