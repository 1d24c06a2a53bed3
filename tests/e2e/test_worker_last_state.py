"""A crash-looping worker's last exit code reaches its ``Worker`` object on the GM.

The GM and an LC as the services assemble them (:func:`support.embedded.embedded_stack`); the
worker is a real process that exits with code 3 on its first start and keeps running on the
next. While it runs again, the ``Worker`` status says ``Running`` with ``lastState`` telling
how it last ended (Kubernetes' ``lastState.terminated``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from support.embedded import embedded_stack

from sedna.resources.worker import WorkerOwner, WorkerSpec
from sedna_gm.workloads.local import worker_status_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

CRASH_ONCE = """
import pathlib, sys, time
marks = pathlib.Path(sys.argv[1])
marks.write_text(marks.read_text() + "x" if marks.exists() else "x")
if marks.read_text() == "x":
    sys.exit(3)
time.sleep(60)
"""


async def test_worker_status_keeps_the_last_exit_code(tmp_path: Path) -> None:
    script = tmp_path / "crash_once.py"
    script.write_text(CRASH_ONCE)
    spec = WorkerSpec(
        owner=WorkerOwner(
            api_version="sedna.io/v1alpha1", kind="FederatedLearningJob", name="fl", namespace="ns"
        ),
        worker_type="train",
        node_name="edge-1",
        command=[sys.executable],
        args=[str(script), str(tmp_path / "marks")],
    )
    async with embedded_stack(tmp_path, node="edge-1") as running:
        runtime = running.gm.runtime  # the local one: the worker runs on the LC
        await runtime.ensure_worker("crashy", spec)
        deadline = time.monotonic() + 30
        while True:
            worker = await running.gm.store.get("Worker", "ns", "crashy")
            status = worker.status
            if status.get("phase") == "Running" and status.get("restartCount") == 1:
                break
            assert time.monotonic() < deadline, f"not running again: {status}"
            await asyncio.sleep(0.05)
        assert "exitCode" not in status  # it runs: no current exit code
        assert status["lastState"] == {"exitCode": 3, "reason": "exited with code 3"}
        assert worker_status_of(worker).exit_code == 3  # what the controllers see
