"""JointInference's periodic report through the real LC HTTP report API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from sedna.core.joint_inference.joint_inference import JointInference
from sedna.service.oip_client import CloudUnavailableError

reports = pytest.importorskip("sedna_lc.reports")

pytestmark = pytest.mark.filterwarnings("ignore:SKLEARN Not Support yet:UserWarning")


class RecordingSink:
    def __init__(self) -> None:
        self.reports: list[Any] = []

    async def submit(self, report: Any) -> int:
        copy = type(report)()
        copy.CopyFrom(report)
        self.reports.append(copy)
        return len(self.reports)


class Estimator:
    def load(self, model_url: str = "") -> None:
        pass

    def predict(self, data: Any, **kwargs: Any) -> Any:
        return np.asarray(data)


class DownCloud:
    def infer(self, data: Any) -> Any:
        raise CloudUnavailableError("down", grpc.StatusCode.UNAVAILABLE)

    def close(self) -> None:
        pass


@pytest.fixture
async def lc_url(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[str, RecordingSink]]:
    sink = RecordingSink()
    server = reports.HttpReportServer(reports.WorkerReportIntake(sink), "127.0.0.1", 0)
    await server.start()
    url = f"http://127.0.0.1:{server.port}"
    monkeypatch.setenv("LC_SERVER", url)
    yield url, sink
    await server.stop()


async def test_owner_info_reaches_the_lc_as_the_controller_reads_it(
    lc_url: tuple[str, RecordingSink], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, sink = lc_url
    model = tmp_path / "m.bin"
    model.write_bytes(b"")
    monkeypatch.setenv("MODEL_URL", str(model))
    monkeypatch.setenv("SERVICE_NAME", "helmet")
    monkeypatch.setenv("WORKER_NAME", "helmet-edge-x1y2z")
    monkeypatch.setenv("NAMESPACE", "default")
    monkeypatch.setenv("LC_PERIOD", "0.05")
    ji = await asyncio.to_thread(
        JointInference,
        estimator=Estimator,
        hard_example_mining={"method": "CrossEntropy"},
        cloud=DownCloud(),
    )
    try:
        await asyncio.to_thread(ji.inference, [0.9, 0.05, 0.05])
        await asyncio.to_thread(ji.inference, [0.5, 0.5])  # hard, the cloud is down
        deadline = time.monotonic() + 10
        while not sink.reports:
            assert time.monotonic() < deadline, "no report reached the LC"
            await asyncio.sleep(0.02)
    finally:
        await asyncio.to_thread(ji.close)
    report = sink.reports[0]
    assert report.owner.kind == "JointInferenceService"
    assert report.owner.name == "helmet"
    assert report.owner.namespace == "default"
    worker = report.worker
    assert worker.worker_name == "helmet-edge-x1y2z"
    assert worker.kind == "inference"
    info = worker.owner_info
    assert info["inferenceNumber"] == 2
    assert info["hardExampleNumber"] == 1
    assert info["uploadCloudRatio"] == pytest.approx(0.5)
    assert info["cloudFallbackNumber"] == 1
