"""Drop and duplicate node-stream messages between the real GM and LC apps: exactly once.

The GlobalManager (SQLite store, controllers, hub) and the LocalController (local state,
outbox, link, report intake) run in this process with a stream wrapper on the GM side that
drops or duplicates one message in five in both directions. Reports go in through the LC's
intake, the way the HTTP and gRPC report APIs hand them over, and come out as Model status
writes: the watch history must read 1..K, each once, in order. A Dataset is also placed on the
node through the same faulty stream and must arrive and be counted.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import pytest
from support.embedded import embedded_stack
from support.faults import Faulty

from sedna.api.common.v1 import types_pb2
from sedna.resources.objects import ObjectKey, ResourceObject

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REPORTS = 150


def reported_index(obj: ResourceObject) -> int | None:
    for metric in obj.status.get("metrics", []):
        if metric.get("key") == "reportIndex":
            return int(metric["value"])
    return None


async def test_drop_and_duplicate_both_ways_apply_each_report_once(tmp_path: Path) -> None:
    rng = random.Random(20261130)
    streams: list[Faulty] = []

    def faulty(stream: Any) -> Any:
        streams.append(Faulty(stream, rng, rate=0.1))
        return streams[-1]

    async with embedded_stack(tmp_path, wrap_stream=faulty) as running:
        gm, lc = running.gm, running.lc
        model = await gm.store.create(
            ResourceObject(
                api_version="sedna.io/v1alpha1",
                kind="Model",
                name="m",
                spec={"url": "/models/m.onnx", "format": "onnx"},
            )
        )
        samples = tmp_path / "train.txt"
        samples.write_text("a\nb\nc\nd\n")
        await gm.store.create(
            ResourceObject(
                api_version="sedna.io/v1alpha1",
                kind="Dataset",
                name="ds",
                spec={"url": str(samples), "format": "txt", "nodeName": "edge-1"},
            )
        )
        history = gm.store.watch("Model", "default", model.resource_version)

        for index in range(1, REPORTS + 1):
            report = types_pb2.WorkerReport(
                worker_name="trainer-0", namespace="default", owner_name="m", owner_kind="Model"
            )
            report.results.add().update({"metrics": {"reportIndex": index}})
            await lc.intake.submit(report)

        seen: list[int] = []

        async def read_history() -> None:
            async for event in history:
                value = reported_index(event.object)
                if value is not None and (not seen or seen[-1] != value):
                    seen.append(value)
                if value == REPORTS:
                    return

        await asyncio.wait_for(read_history(), 120)
        assert seen == list(range(1, REPORTS + 1))

        async def dataset_counted() -> bool:
            obj = await gm.store.get("Dataset", "default", "ds")
            return obj.status.get("numberOfSamples") == 4

        deadline = time.monotonic() + 60
        while not await dataset_counted():
            assert time.monotonic() < deadline, "the Dataset never reached the node"
            await asyncio.sleep(0.1)
        monitored = lc.datasets.keys()  # a method of the monitor, not a dict
        assert ObjectKey("Dataset", "default", "ds") in monitored
        assert sum(s.dropped for s in streams) > 10
        assert sum(s.duplicated for s in streams) > 10
