"""Integration: the SDK's LCClient / LCReporter against the real LC HTTP report API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sedna.api.gm.v1 import hub_service_pb2
from sedna.common.config import BaseConfig
from sedna.service.client import LCClient, LCReporter
from sedna_lc.reports import HttpReportServer, WorkerReportIntake


class RecordingSink:
    """Records every NodeReport the intake submits."""

    def __init__(self) -> None:
        self.reports: list[hub_service_pb2.NodeReport] = []

    async def submit(self, report: hub_service_pb2.NodeReport) -> int:
        copy = hub_service_pb2.NodeReport()
        copy.CopyFrom(report)
        self.reports.append(copy)
        return len(self.reports)


@pytest.fixture
async def lc(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[str, RecordingSink]]:
    sink = RecordingSink()
    server = HttpReportServer(WorkerReportIntake(sink), "127.0.0.1", 0)
    await server.start()
    url = f"http://127.0.0.1:{server.port}"
    monkeypatch.setenv("LC_SERVER", url)
    monkeypatch.setattr(LCClient, "retry_interval", 0.01)
    yield url, sink
    await server.stop()
    BaseConfig.reset()


async def until(check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_stage_report_arrives_with_owner_and_results(
    lc: tuple[str, RecordingSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, sink = lc
    monkeypatch.setenv("WORKER_NAME", "train-worker-x1")
    monkeypatch.setenv("NAMESPACE", "sedna-test")
    monkeypatch.setenv("JOB_NAME", "helmet-il")
    config = BaseConfig()
    message = {  # upstream JobBase.report_task_info
        "name": config.worker_name,
        "namespace": config.namespace,
        "ownerName": config.job_name,
        "ownerKind": "incrementallearningjob",
        "kind": "train",
        "status": "completed",
        "results": [{"format": "pb", "url": "/models/m.pb", "metrics": {"recall": [0.9]}}],
    }
    answer = await asyncio.to_thread(LCClient.send, config.lc_server, config.worker_name, message)
    assert answer == {"Status": 200, "Message": "OK"}
    [report] = sink.reports
    assert report.owner.kind == "IncrementalLearningJob"
    assert report.owner.name == "helmet-il"
    assert report.owner.namespace == "sedna-test"
    worker = report.worker
    assert worker.worker_name == "train-worker-x1"
    assert (worker.kind, worker.status) == ("train", "completed")
    assert worker.results[0]["url"] == "/models/m.pb"
    assert worker.results[0]["metrics"]["recall"][0] == pytest.approx(0.9)


async def test_rejected_report_returns_none(lc: tuple[str, RecordingSink]) -> None:
    url, sink = lc
    bad = {"name": "other", "ownerName": "o", "ownerKind": "x", "kind": "train", "status": "ok"}
    assert await asyncio.to_thread(LCClient.send, url, "w", bad) is None
    assert not sink.reports


async def test_reporter_counters_arrive_as_owner_info(lc: tuple[str, RecordingSink]) -> None:
    url, sink = lc
    message = {  # upstream JointInference's LCReporter message
        "name": "edgeworker-abc",
        "namespace": "default",
        "ownerName": "helmet",
        "ownerKind": "jointinferenceservice",
        "kind": "inference",
        "results": [],
    }
    reporter = LCReporter(url, message, period_interval=0.05)
    for _ in range(3):
        reporter.update_for_edge_inference()
    reporter.update_for_collaboration_inference()
    reporter.start()
    try:
        await until(lambda: sink.reports)
    finally:
        await asyncio.to_thread(reporter.stop, 5)
    report = sink.reports[0]
    assert report.owner.kind == "JointInferenceService"
    assert report.owner.name == "helmet"
    worker = report.worker
    assert worker.kind == "inference"
    info = worker.owner_info
    assert info["inferenceNumber"] == 4
    assert info["hardExampleNumber"] == 1
    assert info["uploadCloudRatio"] == pytest.approx(0.25)
    assert info["startTime"]
    assert info["updateTime"]
