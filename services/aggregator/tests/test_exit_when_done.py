"""``watch_sessions``: when ``exit_when_done`` asks the server to exit, and with which code."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from sedna_aggregator.core import SessionState
from sedna_aggregator.exit_when_done import watch_sessions

DEADLINE = 5.0


@dataclass
class FakeSession:
    session_id: str
    state: SessionState = SessionState.ROUND_OPEN
    clients: list[str] = field(default_factory=list)
    reason: str = ""

    def status(self) -> Any:
        return type("Status", (), {"clients": tuple(self.clients)})()


class Exits:
    def __init__(self) -> None:
        self.codes: list[int] = []
        self.called = asyncio.Event()

    def __call__(self, code: int) -> None:
        self.codes.append(code)
        self.called.set()


async def _watch(sessions: dict[str, Any], grace: float) -> tuple[Exits, asyncio.Task[None]]:
    exits = Exits()
    task = asyncio.ensure_future(watch_sessions(lambda: sessions, exits, grace=grace, poll=0.01))
    return exits, task


async def _not_called(exits: Exits, task: asyncio.Task[None], seconds: float = 0.2) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(exits.called.wait()), timeout=seconds)
    assert not task.done()


async def test_no_session_or_one_still_running_keeps_serving() -> None:
    sessions: dict[str, Any] = {}
    exits, task = await _watch(sessions, grace=0)
    await _not_called(exits, task)
    sessions["a"] = FakeSession("a", SessionState.COMPLETED)
    sessions["b"] = FakeSession("b", SessionState.ROUND_OPEN)
    await _not_called(exits, task)
    sessions["b"].state = SessionState.COMPLETED
    await asyncio.wait_for(task, DEADLINE)
    assert exits.codes == [0]


async def test_a_failed_session_exits_1_at_once() -> None:
    sessions: dict[str, Any] = {
        "a": FakeSession("a", SessionState.FAILED, ["t1"], reason="round 2 ended with 1 of 2")
    }
    exits, task = await _watch(sessions, grace=3600)
    await asyncio.wait_for(task, DEADLINE)
    assert exits.codes == [1]


async def test_completed_waits_for_joined_trainers_until_they_leave() -> None:
    session = FakeSession("a", SessionState.COMPLETED, ["t1", "t2"])
    exits, task = await _watch({"a": session}, grace=3600)
    await _not_called(exits, task)
    session.clients = []
    await asyncio.wait_for(task, DEADLINE)
    assert exits.codes == [0]


async def test_completed_exits_after_the_grace_with_trainers_still_joined() -> None:
    exits, task = await _watch({"a": FakeSession("a", SessionState.COMPLETED, ["t1"])}, grace=0.1)
    await asyncio.wait_for(task, DEADLINE)
    assert exits.codes == [0]
