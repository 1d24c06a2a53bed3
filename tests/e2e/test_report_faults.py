"""Fault tests: worker reports survive ``kill -9`` of the LC and a 15 s GM outage, exactly once.

A worker (a thread posting upstream-format reports to its node's LC over HTTP, retrying a report
until the LC accepts it) numbers its reports 1..K in a Model metric. Every application of a
report writes the Model's status, so the Model's watch history *is* the list of applied
reports: it must read 1, 2, ..., K — a gap is a lost report, a step back a report applied
twice. (Re-applying the report just applied leaves the status unchanged: that is the
idempotence the at-least-once link relies on, and it writes nothing.)
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import grpc
import pytest
import yaml

from sedna.api.gm.v1 import resource_service_pb2 as pb
from sedna.api.gm.v1 import resource_service_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NODE = "edge-1"
MODEL = "reported-model"
# Longer than the LC's reconnect backoff cap (10 s), so the link retries at the cap while the
# GM is down. At 20-25 accepted reports/s it queues 300-375 reports in the LC's outbox, three
# times the 100 the test requires (a 30 s outage only made the backlog, and its drain, longer).
OUTAGE_SECONDS = 15.0
# About 25 reports/s: the outage leaves a backlog of ~375 in the LC's outbox. The GM applies
# one node's reports in order at 20-40/s on a 2-core CI machine (each is a status write that
# every watcher reads), so faster reporting only grows the drain at the end, not the test's
# reach (at 100/s the backlog was ~3,000 and its drain alone outlasted the history deadline).
REPORT_INTERVAL = 0.04
# Reports accepted before the LC is killed, between its restart and the GM's stop, and after
# the GM's restart: each phase runs with the worker reporting, not only around it.
PHASE_REPORTS = 50
HISTORY_DEADLINE = 180.0


class ReportingWorker(threading.Thread):
    """Posts report i until the LC answers 200, then report i+1; never skips one."""

    def __init__(self, cluster: Any, tools: Any, interval: float = REPORT_INTERVAL) -> None:
        super().__init__(name="reporting-worker", daemon=True)
        self.cluster = cluster
        self.tools = tools
        self.interval = interval
        self.accepted = 0
        self.refused = 0
        self.stopping = threading.Event()

    def body(self, index: int) -> dict[str, Any]:
        return {
            "name": "trainer-0",
            "namespace": "default",
            "ownerName": MODEL,
            "ownerKind": "model",
            "kind": "train",
            "status": "running",
            "results": [{"metrics": {"reportIndex": index}}],
        }

    def run(self) -> None:
        index = 1
        while not self.stopping.is_set():
            status = self.cluster.post_report(NODE, "trainer-0", self.body(index))
            if status == 200:
                self.accepted = index
                index += 1
                self.stopping.wait(self.interval)
            else:
                self.refused += 1
                self.stopping.wait(0.05)

    def wait_for(self, count: int, within: float = 60.0) -> None:
        self.tools.eventually(lambda: self.accepted >= count, within, f"{count} accepted reports")


def _reported_index(resource: Any) -> int | None:
    status = json.loads(resource.status_json or b"{}")
    for metric in status.get("metrics", []):
        if metric.get("key") == "reportIndex":
            return int(metric["value"])
    return None


def applied_history(address: str, since: str, last: int, within: float) -> list[int]:
    """The reportIndex values of the Model's status changes after ``since``, up to ``last``."""
    history: list[int] = []
    with grpc.insecure_channel(address) as channel:
        stream = pb_grpc.ResourceServiceStub(channel).Watch(
            pb.WatchRequest(kind="Model", namespace="default", resource_version=since),
            timeout=within,
        )
        for event in stream:
            if event.type != pb.EVENT_TYPE_MODIFIED:
                continue
            value = _reported_index(event.resource)
            if value is None or (history and history[-1] == value):
                continue  # a controller write (conditions) that kept the same report
            history.append(value)
            if value == last:
                stream.cancel()
                break
    return history


def test_reports_survive_lc_kill_and_gm_outage_exactly_once(
    cluster: Any, e2e_tools: Any, tmp_path: Any
) -> None:
    lc = cluster.add_lc(NODE)
    manifest = tmp_path / "model.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "sedna.io/v1alpha1",
                "kind": "Model",
                "metadata": {"name": MODEL},
                "spec": {"url": "/models/m.onnx", "format": "onnx"},
            }
        )
    )
    cluster.sedna("apply", "-f", str(manifest))
    created = cluster.get_json("model", MODEL)["metadata"]["resourceVersion"]

    worker = ReportingWorker(cluster, e2e_tools)
    began = time.monotonic()

    def phase(what: str) -> None:
        print(f"{time.monotonic() - began:6.1f}s  {what}: {worker.accepted} accepted")

    worker.start()
    try:
        worker.wait_for(PHASE_REPORTS)
        # 1. kill -9 the LC while the worker reports, then restart it on the same state.
        lc.kill()
        phase("LC killed")
        lc.start()
        phase("LC restarted")
        worker.wait_for(worker.accepted + PHASE_REPORTS)
        # 2. Stop the GM for OUTAGE_SECONDS; the worker keeps reporting into the LC's outbox.
        assert cluster.gm.stop() == 0
        phase("GM stopped")
        during_outage = worker.accepted
        worker.stopping.wait(OUTAGE_SECONDS)
        assert worker.accepted > during_outage + 100, "the LC stopped accepting reports"
        cluster.gm.start()
        phase("GM restarted")
        worker.wait_for(worker.accepted + PHASE_REPORTS)
    finally:
        worker.stopping.set()
        worker.join(timeout=30)
    last = worker.accepted
    assert worker.refused > 0, "the LC was never down while the worker reported"

    phase("worker stopped")
    history = applied_history(cluster.gm.address, created, last, within=HISTORY_DEADLINE)
    phase("history read")
    missing = sorted(set(range(1, last + 1)) - set(history))
    assert not missing, f"{len(missing)} reports never reached the status, e.g. {missing[:10]}"
    assert history == list(range(1, last + 1)), "a report was applied twice or out of order"
    # Reconnecting through the outage logs warnings, never asyncio's errors about the stream's
    # tasks (grpc.aio's proxy of an intercepted bidi call: see sedna.runtime.open_channel).
    errors = [line for line in lc.log_path.read_text().splitlines() if '"level": "ERROR"' in line]
    assert not errors, f"the LC logged errors: {errors[:3]}"
