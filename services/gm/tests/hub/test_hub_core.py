"""NodeHub core with an in-memory fake transport (no gRPC)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from sedna.api.gm.v1 import hub_service_pb2 as pb
from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_gm.hub import HubConfig, HubRejectedError, MemoryHubStateStore, NodeHub, NodeRecord
from sedna_gm.hub.sql_state_store import SqlHubStateStore

pytestmark = pytest.mark.timeout(30)


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.002)


def obj(name: str, gen: int = 1) -> ResourceObject:
    return ResourceObject(kind="Model", name=name, generation=gen)


class FakeStream:
    """The node's end: ``inbox`` feeds the hub, ``sent`` collects what the hub wrote."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[pb.ConnectRequest | None] = asyncio.Queue()
        self.sent: list[pb.ConnectResponse] = []

    async def recv(self) -> pb.ConnectRequest | None:
        return await self.inbox.get()

    async def send(self, message: pb.ConnectResponse) -> None:
        self.sent.append(message)

    def put(self, **kwargs: Any) -> None:
        self.inbox.put_nowait(pb.ConnectRequest(**kwargs))

    def events(self) -> list[pb.ResourceEvent]:
        return [m.event for m in self.sent if m.WhichOneof("message") == "event"]

    def of(self, kind: str) -> list[Any]:
        return [getattr(m, kind) for m in self.sent if m.WhichOneof("message") == kind]


class Reports:
    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.fail_next = False

    async def handle_report(self, node: str, report: pb.NodeReport) -> None:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("db down")
        self.seqs.append(report.seq)


class Desired:
    def __init__(self, *objects: ResourceObject) -> None:
        self.objects = list(objects)

    async def desired_objects(
        self, node: str
    ) -> Sequence[tuple[ResourceObject, Mapping[str, str]]]:
        return [(o, {}) for o in self.objects]


def make_hub(**config: Any) -> tuple[NodeHub, Reports, Desired]:
    reports, desired = Reports(), Desired()
    config.setdefault("heartbeat_seconds", 5.0)
    return NodeHub(reports, desired, HubConfig(**config)), reports, desired


def connect(hub: NodeHub, session: str = "", last: int = 0, token: str | None = None):  # type: ignore[no-untyped-def]
    stream = FakeStream()
    stream.put(hello=pb.NodeHello(node_name="n1", session_id=session, last_applied_event_seq=last))
    task = asyncio.ensure_future(hub.serve(stream, token))
    return stream, task


async def welcomed(stream: FakeStream) -> pb.HubWelcome:
    await eventually(lambda: bool(stream.of("welcome")))
    welcome: pb.HubWelcome = stream.of("welcome")[0]
    return welcome


async def finish(stream: FakeStream, task: asyncio.Future[None]) -> None:
    stream.inbox.put_nowait(None)
    await asyncio.wait_for(task, 5)


async def test_coalescing_replaces_pending_event() -> None:
    hub, _, _ = make_hub()
    stream, task = connect(hub)
    await welcomed(stream)
    await eventually(lambda: bool(stream.of("resync_completed")))
    base = len(stream.events())
    # Not yet sent while the sender task has not run: queue three writes of one key.
    await hub.upsert("n1", obj("a", 1))
    await hub.upsert("n1", obj("b", 1))
    await hub.upsert("n1", obj("a", 2))
    await eventually(lambda: len(stream.events()) == base + 2)
    await asyncio.sleep(0)
    names = [
        (e.resource.metadata.name, e.resource.metadata.generation) for e in stream.events()[base:]
    ]
    assert names == [("b", 1), ("a", 2)]
    await finish(stream, task)


async def test_duplicate_report_acked_not_reapplied_and_gap_ignored() -> None:
    hub, reports, _ = make_hub()
    stream, task = connect(hub)
    await welcomed(stream)
    for seq in (1, 2, 2, 1, 4, 3):
        stream.put(report=pb.NodeReport(seq=seq))
    await eventually(lambda: len(stream.of("ack")) == 6)
    assert reports.seqs == [1, 2, 3]  # 4 came after a gap: not applied until resent
    # Duplicates and the report after the gap re-acknowledge the last applied one (2): the
    # node resends from there without waiting for its timer.
    assert [a.seq for a in stream.of("ack")] == [1, 2, 2, 2, 2, 3]
    await finish(stream, task)


async def test_report_handler_failure_ends_session_without_ack() -> None:
    hub, reports, _ = make_hub()
    stream, task = connect(hub)
    await welcomed(stream)
    reports.fail_next = True
    stream.put(report=pb.NodeReport(seq=1))
    with pytest.raises(HubRejectedError) as err:
        await asyncio.wait_for(task, 5)
    assert err.value.code == "unavailable"
    assert not stream.of("ack")
    stream2, task2 = connect(hub, session=(await welcomed(stream)).session_id)
    assert (await welcomed(stream2)).last_applied_report_seq == 0
    stream2.put(report=pb.NodeReport(seq=1))
    await eventually(lambda: reports.seqs == [1])
    await finish(stream2, task2)


async def test_unacked_events_resent_after_reconnect_same_session() -> None:
    hub, _, _ = make_hub()
    stream, task = connect(hub)
    welcome = await welcomed(stream)
    await eventually(lambda: bool(stream.of("resync_completed")))  # seq 1 (empty desired)
    stream.put(ack=pb.Ack(seq=1))
    for name in "abc":
        await hub.upsert("n1", obj(name))
    await eventually(lambda: len(stream.events()) == 3)
    stream.put(ack=pb.Ack(seq=2))  # node applied "a" only
    await eventually(lambda: hub.node_stats("n1").pending_messages == 2)  # type: ignore[union-attr]
    await finish(stream, task)
    stream2, task2 = connect(hub, session=welcome.session_id, last=2)
    welcome2 = await welcomed(stream2)
    assert not welcome2.full_resync
    assert welcome2.session_id == welcome.session_id
    await eventually(lambda: len(stream2.events()) == 2)
    assert [(e.seq, e.resource.metadata.name) for e in stream2.events()] == [(3, "b"), (4, "c")]
    await finish(stream2, task2)


async def test_unknown_session_gets_full_resync_listing_desired_objects() -> None:
    hub, _, desired = make_hub()
    desired.objects = [obj("keep-1"), obj("keep-2")]
    stream, task = connect(hub, session="from-a-previous-gm", last=57)
    welcome = await welcomed(stream)
    assert welcome.full_resync
    assert welcome.session_id != "from-a-previous-gm"
    await eventually(lambda: bool(stream.of("resync_completed")))
    assert [(e.seq, e.resource.metadata.name) for e in stream.events()] == [
        (1, "keep-1"),
        (2, "keep-2"),
    ]
    done = stream.of("resync_completed")[0]
    assert done.seq == 3
    assert [r.name for r in done.resources] == ["keep-1", "keep-2"]
    await finish(stream, task)


async def test_full_queue_applies_backpressure_then_marks_resync() -> None:
    hub, _, desired = make_hub(queue_capacity=3, enqueue_timeout=0.05)
    stream, task = connect(hub)
    welcome = await welcomed(stream)
    await eventually(lambda: bool(stream.of("resync_completed")))
    stream.put(ack=pb.Ack(seq=1))
    await eventually(lambda: hub.node_stats("n1").pending_messages == 0)  # type: ignore[union-attr]
    for name in "abc":
        await hub.upsert("n1", obj(name))
    start = time.monotonic()
    desired.objects = [obj(n) for n in "abcd"]
    await hub.upsert("n1", obj("d"))  # no acks: waits for space, then gives up
    assert time.monotonic() - start >= 0.05
    with pytest.raises(HubRejectedError, match="overflow"):
        await asyncio.wait_for(task, 5)
    stream2, task2 = connect(hub, session=welcome.session_id, last=4)
    assert (await welcomed(stream2)).full_resync
    await eventually(lambda: bool(stream2.of("resync_completed")))
    assert [e.resource.metadata.name for e in stream2.events()] == list("abcd")
    await finish(stream2, task2)


async def test_backpressure_waits_for_ack_then_proceeds() -> None:
    hub, _, _ = make_hub(queue_capacity=2, enqueue_timeout=5)
    stream, task = connect(hub)
    await welcomed(stream)
    await eventually(lambda: bool(stream.of("resync_completed")))
    await hub.upsert("n1", obj("a"))
    blocked = asyncio.ensure_future(hub.upsert("n1", obj("b")))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    stream.put(ack=pb.Ack(seq=2))
    await asyncio.wait_for(blocked, 5)
    await eventually(lambda: [e.resource.metadata.name for e in stream.events()] == ["a", "b"])
    await finish(stream, task)


async def test_second_connection_replaces_first() -> None:
    hub, _, _ = make_hub()
    stream, task = connect(hub)
    welcome = await welcomed(stream)
    stream2, task2 = connect(hub, session=welcome.session_id)
    await welcomed(stream2)
    with pytest.raises(HubRejectedError, match="replaced"):
        await asyncio.wait_for(task, 5)
    info = hub.get_node("n1")
    assert info is not None
    assert info.connected
    await finish(stream2, task2)
    assert not hub.get_node("n1").connected  # type: ignore[union-attr]


async def test_silent_node_disconnected_after_three_heartbeats() -> None:
    hub, _, _ = make_hub(heartbeat_seconds=0.02)
    stream, task = connect(hub)
    await welcomed(stream)
    with pytest.raises(HubRejectedError, match="silent"):
        await asyncio.wait_for(task, 5)
    assert stream.of("heartbeat")


@pytest.mark.parametrize(
    ("token", "code"),
    [(None, "unauthenticated"), ("wrong", "permission_denied"), ("t2", "permission_denied")],
)
async def test_token_auth(token: str | None, code: str) -> None:
    hub, _, _ = make_hub(node_tokens={"n1": "t1", "n2": "t2"})
    _stream, task = connect(hub, token=token)
    with pytest.raises(HubRejectedError) as err:
        await asyncio.wait_for(task, 5)
    assert err.value.code == code
    assert "n1" in err.value.message
    assert token is None or token not in err.value.message


async def test_bad_hello_rejected() -> None:
    hub, _, _ = make_hub()
    stream = FakeStream()
    stream.put(ack=pb.Ack(seq=1))
    with pytest.raises(HubRejectedError, match="NodeHello"):
        await hub.serve(stream)


@pytest.mark.parametrize("kind", ["memory", "sql"])
async def test_report_position_survives_restart(kind: str, tmp_path: Path) -> None:
    def store() -> Any:
        return (
            MemoryHubStateStore()
            if kind == "memory"
            else SqlHubStateStore(f"sqlite:///{tmp_path / 'hub.db'}")
        )

    shared = store()
    reports, desired = Reports(), Desired()
    hub = NodeHub(reports, desired, store=shared)
    stream, task = connect(hub)
    welcome = await welcomed(stream)
    stream.put(report=pb.NodeReport(seq=1))
    stream.put(report=pb.NodeReport(seq=2))
    await eventually(lambda: len(stream.of("ack")) == 2)
    await finish(stream, task)
    again = shared if kind == "memory" else store()
    hub2 = NodeHub(reports, desired, store=again)
    await hub2.load()
    assert hub2.get_node("n1") is not None
    stream2, task2 = connect(hub2, session=welcome.session_id, last=1)
    welcome2 = await welcomed(stream2)
    assert welcome2.last_applied_report_seq == 2
    assert welcome2.full_resync
    stream2.put(report=pb.NodeReport(seq=2))
    stream2.put(report=pb.NodeReport(seq=3))
    await eventually(lambda: len(stream2.of("ack")) == 2)
    assert reports.seqs == [1, 2, 3]
    await finish(stream2, task2)
    records = await again.load_all()
    assert records == [NodeRecord("n1", welcome2.session_id, 3)]
    await again.close()


async def test_fresh_node_state_resets_report_numbering() -> None:
    hub, reports, _ = make_hub()
    stream, task = connect(hub)
    await welcomed(stream)
    stream.put(report=pb.NodeReport(seq=1))
    await eventually(lambda: reports.seqs == [1])
    await finish(stream, task)
    stream2, task2 = connect(hub, session="")  # the node lost its database
    assert (await welcomed(stream2)).last_applied_report_seq == 0
    stream2.put(report=pb.NodeReport(seq=1))
    await eventually(lambda: reports.seqs == [1, 1])
    await finish(stream2, task2)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="queue_capacity"):
        HubConfig(queue_capacity=0)
    with pytest.raises(ValueError, match="heartbeat_seconds"):
        HubConfig(heartbeat_seconds=0)


async def test_upsert_for_unconnected_node_is_left_to_resync() -> None:
    hub, _, _ = make_hub()
    await hub.upsert("never", obj("a"))
    assert hub.node_stats("never").pending_messages == 0  # type: ignore[union-attr]
    assert hub.node_stats("never").resource_count == 1  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="node_name"):
        await hub.upsert("", obj("a"))
    _ = ObjectKey
