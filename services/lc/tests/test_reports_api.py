"""Worker report API: the upstream HTTP route and the gRPC services over loopback."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from sedna.api.common.v1 import types_pb2
from sedna.api.lc.v1 import worker_service_pb2 as pb
from sedna.api.lc.v1 import worker_service_pb2_grpc as pb_grpc
from sedna.resources.objects import ResourceObject
from sedna.resources.worker import WORKER_API_VERSION, WorkerOwner, WorkerSpec
from sedna.runtime import ServiceServer, ServiceSettings
from sedna_lc.reports import (
    HttpReportServer,
    NodeStatus,
    WorkerReportIntake,
    add_lc_servicers,
)
from sedna_lc.workers import BackoffPolicy, ProcessRuntime

UPSTREAM_BODY: dict[str, Any] = {
    "name": "edgeworker-abc",
    "namespace": "default",
    "ownerName": "helmet",
    "ownerKind": "jointinferenceservice",
    "kind": "inference",
    "status": "running",
    "ownerInfo": {"inferenceNumber": 12, "hardExampleNumber": 3, "uploadCloudRatio": 0.25},
    "results": [{"format": "pb", "url": "/models/m.pb", "metrics": {"acc": [0.9, 0.8]}}],
}


@pytest.fixture
async def http(sink: Any) -> AsyncIterator[tuple[str, WorkerReportIntake]]:
    intake = WorkerReportIntake(sink)
    server = HttpReportServer(intake, "127.0.0.1", 0, max_body_bytes=64 * 1024)
    await server.start()
    yield f"http://127.0.0.1:{server.port}", intake
    await server.stop()


async def post(base: str, worker: str, body: bytes) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{base}/sedna/workers/{worker}/info",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as resp,
    ):
        return resp.status, json.loads(await resp.text())


async def test_http_valid_report_reaches_the_sink(http: Any, sink: Any) -> None:
    base, _ = http
    status, answer = await post(base, "edgeworker-abc", json.dumps(UPSTREAM_BODY).encode())
    assert status == 200
    assert answer == {"Status": 200, "Message": "OK"}
    [report] = sink.reports
    assert report.owner.kind == "JointInferenceService"  # upstream's lowercase kind, mapped
    assert report.owner.name == "helmet"
    assert report.owner.namespace == "default"
    assert report.owner.api_version == "sedna.io/v1alpha1"
    worker = report.worker
    assert worker.worker_name == "edgeworker-abc"
    assert worker.kind == "inference"
    assert worker.status == "running"
    assert worker.report_id
    assert worker.owner_info["inferenceNumber"] == 12
    assert worker.results[0]["metrics"]["acc"][1] == pytest.approx(0.8)
    assert worker.report_time.seconds > 0


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"name": "other"}, "name", "does not match the worker name in the path"),
        ({"name": 5}, "name", "must be a string"),
        ({"status": "exploded"}, "status", "'exploded' is not one of running"),
        ({"kind": "sleep"}, "kind", "'sleep' is not one of train"),
        ({"ownerInfo": [1]}, "ownerInfo", "must be an object"),
        ({"results": [1]}, "results[0]", "must be an object"),
        ({"ownerName": None}, "ownerName", "required"),
    ],
)
async def test_http_bad_fields_get_400_naming_the_field(
    http: Any, sink: Any, change: dict[str, Any], field: str, fragment: str
) -> None:
    base, _ = http
    body = {**UPSTREAM_BODY, **change}
    body = {k: v for k, v in body.items() if v is not None}
    status, answer = await post(base, "edgeworker-abc", json.dumps(body).encode())
    assert status == 400
    assert answer["field"] == field
    assert fragment in answer["Message"]
    assert answer["Message"].startswith(f"{field}:")
    assert not sink.reports


async def test_http_upstream_reporter_body_without_status_or_kind(http: Any, sink: Any) -> None:
    # Upstream's joint-inference LCReporter sends neither; its LC takes them as empty.
    base, _ = http
    body = {k: v for k, v in UPSTREAM_BODY.items() if k not in ("status", "kind")}
    status, _ = await post(base, "edgeworker-abc", json.dumps(body).encode())
    assert status == 200
    [report] = sink.reports
    assert report.worker.status == ""
    assert report.worker.kind == ""
    assert report.worker.owner_info["inferenceNumber"] == 12


async def test_http_malformed_json_and_oversized(http: Any, sink: Any) -> None:
    base, _ = http
    status, answer = await post(base, "w", b"{not json")
    assert status == 400
    assert answer["field"] == "body"
    assert "malformed JSON" in answer["Message"]
    status, answer = await post(base, "w", b"[1, 2]")
    assert status == 400
    assert "must be a JSON object" in answer["Message"]
    big = json.dumps({**UPSTREAM_BODY, "ownerInfo": {"pad": "x" * 100_000}}).encode()
    status, answer = await post(base, "edgeworker-abc", big)
    assert status == 413
    assert answer["Status"] == 413
    assert not sink.reports


async def test_http_sink_failure_is_503(http: Any, sink: Any) -> None:
    base, _ = http
    sink.fail = True
    status, answer = await post(base, "edgeworker-abc", json.dumps(UPSTREAM_BODY).encode())
    assert status == 503
    assert "retry" in answer["Message"]


# ------------------------------------------------------------------------------------ gRPC


def _worker(script: Path) -> ResourceObject:
    spec = WorkerSpec(
        owner=WorkerOwner(
            api_version="sedna.io/v1alpha1",
            kind="FederatedLearningJob",
            name="fl",
            namespace="default",
        ),
        worker_type="train",
        command=[sys.executable],
        args=[str(script)],
    )
    return ResourceObject(
        kind="Worker",
        api_version=WORKER_API_VERSION,
        name="trainworker-1",
        namespace="default",
        spec=spec.model_dump(by_alias=True, mode="json"),
    )


@pytest.fixture
async def grpc_lc(sink: Any, tmp_path: Path) -> AsyncIterator[tuple[grpc.aio.Channel, Any]]:
    runtime = ProcessRuntime(
        sink,
        tmp_path / "data",
        backoff=BackoffPolicy(0.05, 0.1),
        stop_grace=1.0,
        poll_interval=0.05,
    )
    intake = WorkerReportIntake(sink, owner_lookup=runtime.owner_of)
    server = ServiceServer(ServiceSettings(host="127.0.0.1", port=0, metrics_port=None))

    async def status() -> NodeStatus:
        return NodeStatus(connected_to_gm=True, outbox_size=7, resource_count=1)

    add_lc_servicers(server, intake, runtime, "edge-1", status)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    yield channel, runtime
    await channel.close()
    await server.stop(0)
    await runtime.close(stop_workers=True)


async def test_grpc_list_workers_shows_the_last_exit_code_after_a_restart(
    grpc_lc: Any, tmp_path: Path
) -> None:
    channel, runtime = grpc_lc
    marks = tmp_path / "marks"
    script = tmp_path / "w.py"  # the first start crashes with code 3, the next one runs
    script.write_text(
        "import sys, time\n"
        f"m = open({str(marks)!r}, 'a+'); m.write('x'); m.close()\n"
        f"if len(open({str(marks)!r}).read()) == 1: sys.exit(3)\n"
        "time.sleep(60)\n"
    )
    await runtime.apply(_worker(script), {})
    agent = pb_grpc.NodeAgentServiceStub(channel)

    async def listed() -> pb.WorkerInfo:
        [info] = (await agent.ListWorkers(pb.ListWorkersRequest())).workers
        return info

    deadline = asyncio.get_running_loop().time() + 10
    while True:
        w = await listed()
        if (w.phase, w.restart_count) == (types_pb2.WORKER_PHASE_RUNNING, 1) and w.pid:
            break
        assert asyncio.get_running_loop().time() < deadline, f"not running again: {w}"
        await asyncio.sleep(0.02)
    assert w.exit_code == 0  # the current state: running
    assert w.last_exit_code == 3
    assert w.last_termination_reason == "exited with code 3"


async def test_grpc_report_dedup_and_default_owner_kind(
    grpc_lc: Any, sink: Any, tmp_path: Path, eventually: Any
) -> None:
    channel, runtime = grpc_lc
    script = tmp_path / "w.py"
    script.write_text("import time\nprint('line1')\nprint('line2', flush=True)\ntime.sleep(60)\n")
    await runtime.apply(_worker(script), {})
    stub = pb_grpc.WorkerReportServiceStub(channel)
    report = types_pb2.WorkerReport(
        worker_name="trainworker-1",
        namespace="default",
        owner_name="fl",
        owner_kind="default",  # the FL v1 lib's quirk
        kind="train",
        status="running",
        report_id="r-1",
    )
    first = await stub.ReportWorkerStatus(pb.ReportWorkerStatusRequest(report=report))
    again = await stub.ReportWorkerStatus(pb.ReportWorkerStatusRequest(report=report))
    assert first.report_id == "r-1"
    assert not first.duplicate
    assert again.duplicate
    [node_report] = sink.of("worker")
    assert node_report.owner.kind == "FederatedLearningJob"  # from the runtime's worker
    assert node_report.worker.owner_kind == "FederatedLearningJob"

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReportWorkerStatus(pb.ReportWorkerStatusRequest(report=types_pb2.WorkerReport()))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "name" in (err.value.details() or "")

    agent = pb_grpc.NodeAgentServiceStub(channel)
    info = await agent.GetNodeInfo(pb.GetNodeInfoRequest())
    assert info.node_name == "edge-1"
    assert info.connected_to_gm
    assert info.outbox_size == 7
    await eventually(lambda: runtime.list_workers()[0].pid, what="worker running")
    listed = await agent.ListWorkers(pb.ListWorkersRequest(namespace="default"))
    [w] = listed.workers
    assert w.name == "trainworker-1"
    assert w.phase == types_pb2.WORKER_PHASE_RUNNING
    assert w.owner.kind == "FederatedLearningJob"
    assert w.pid > 0
    assert not (await agent.ListWorkers(pb.ListWorkersRequest(namespace="other"))).workers

    log_path = runtime.log_path("default", "trainworker-1")
    await eventually(lambda: log_path.exists() and b"line2" in log_path.read_bytes(), what="log")
    stream = agent.StreamWorkerLogs(
        pb.StreamWorkerLogsRequest(namespace="default", worker_name="trainworker-1", tail_lines=1)
    )
    data = b"".join([m.data async for m in stream])
    assert data == b"line2\n"

    follow = agent.StreamWorkerLogs(
        pb.StreamWorkerLogsRequest(namespace="default", worker_name="trainworker-1", follow=True)
    )
    got = await asyncio.wait_for(follow.read(), timeout=5)
    assert b"line1" in got.data
    follow.cancel()

    missing = agent.StreamWorkerLogs(
        pb.StreamWorkerLogsRequest(namespace="default", worker_name="nobody")
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in missing:
            pass
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
