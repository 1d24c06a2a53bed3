"""Shared fixtures of the LC manager tests: a recording ReportSink and a deadline poller."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sedna.api.gm.v1 import hub_service_pb2


class FakeSink:
    """Records every submitted report; ``fail`` makes submits raise (sink unavailable)."""

    def __init__(self) -> None:
        self.reports: list[hub_service_pb2.NodeReport] = []
        self.fail = False

    async def submit(self, report: hub_service_pb2.NodeReport) -> int:
        if self.fail:
            raise RuntimeError("outbox unavailable")
        copy = hub_service_pb2.NodeReport()
        copy.CopyFrom(report)
        copy.seq = len(self.reports) + 1
        self.reports.append(copy)
        return copy.seq

    def of(self, payload: str) -> list[hub_service_pb2.NodeReport]:
        return [r for r in self.reports if r.WhichOneof("payload") == payload]


Eventually = Callable[..., Awaitable[Any]]


async def _eventually(
    check: Callable[[], Any], within: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll ``check()`` until it returns a truthy value; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what or check}")
        await asyncio.sleep(interval)


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


@pytest.fixture
def eventually() -> Eventually:
    return _eventually
