"""LocalState, Outbox and Backoff (no GM needed)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sedna.api.gm.v1 import hub_service_pb2 as pb
from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_lc.link import Backoff, LinkConfig
from sedna_lc.state import LocalState, Outbox


def report(name: str) -> pb.NodeReport:
    return pb.NodeReport(worker_state=pb.WorkerState(worker_name=name))


async def test_outbox_survives_reopen_and_acks(tmp_path: Path) -> None:
    async with LocalState(tmp_path / "lc.db") as state:
        outbox = Outbox(state)
        original = report("a")
        assert [await outbox.submit(report(n)) for n in "abc"] == [1, 2, 3]
        assert original.seq == 0  # the caller's message is not modified
        assert outbox.size == 3
    async with LocalState(tmp_path / "lc.db") as state:
        outbox = Outbox(state)
        assert await outbox.refresh_size() == 3
        await outbox.ack(2)
        pending = await outbox.pending(after=0)
        assert [(r.seq, r.worker_state.worker_name) for r in pending] == [(3, "c")]
        assert await outbox.submit(report("d")) == 4  # numbering continues after acks
        await outbox.rebase(10)
        assert [r.seq for r in await outbox.pending(after=0)] == [11, 12]
        assert await outbox.submit(report("e")) == 13


async def test_resources_and_position_are_transactional(tmp_path: Path) -> None:
    async with LocalState(tmp_path / "lc.db") as state:
        assert (await state.link_position()).session_id == ""
        await state.start_session("s1", 0)
        a = ResourceObject(kind="Dataset", name="a", uid="u1", status={"x": 1})
        b = ResourceObject(kind="Dataset", name="b")
        await state.record_upsert(1, a, {"AWS_SECRET": "shh"})
        await state.record_upsert(2, b, {})
        await state.record_remove(3, b.key)
        stored = await state.resources()
        assert [(r.obj.key, r.obj.uid, r.obj.status) for r in stored] == [(a.key, "u1", {"x": 1})]
        assert stored[0].credentials == {"AWS_SECRET": "shh"}
        assert "shh" not in repr(stored[0])
        await state.record_upsert(4, b, {})
        await state.record_resync(5, [ObjectKey("Dataset", "default", "b")])
        assert [r.obj.name for r in await state.resources()] == ["b"]
        position = await state.link_position()
        assert (position.session_id, position.last_applied_event_seq) == ("s1", 5)


async def test_closed_state_gives_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not open"):
        await LocalState(tmp_path / "x.db").link_position()


def test_backoff_grows_with_jitter_and_caps() -> None:
    backoff = Backoff(0.1, 1.0, random.Random(1))
    delays = [backoff.next_delay() for _ in range(20)]
    assert all(0 <= d <= 1.0 for d in delays)
    assert max(delays[:2]) <= 0.2
    backoff.reset()
    assert backoff.next_delay() <= 0.1
    with pytest.raises(ValueError, match="initial"):
        Backoff(2.0, 1.0)
    with pytest.raises(ValueError, match="heartbeat_seconds"):
        LinkConfig(heartbeat_seconds=0)
