"""The embedded process runtime: phases, restarts with back-off, stop, logs, adoption."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sedna.api.common.v1 import types_pb2
from sedna.resources.objects import ObjectKey, ResourceObject
from sedna.resources.worker import WORKER_API_VERSION, EnvVar, WorkerOwner, WorkerSpec
from sedna_lc.workers import NO_COMMAND_MESSAGE, BackoffPolicy, ProcessRuntime
from sedna_lc.workers.proc import is_alive, process_start_time

P = types_pb2
SCRIPT = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    mode = sys.argv[1]
    marks = os.environ.get("MARKS")
    if marks:
        with open(marks, "a") as f:
            f.write(f"{os.getpid()}\\n")
    print("hello from", os.environ.get("WORKER_NAME"), "FOO=" + os.environ.get("FOO", ""))
    print("LEAK=" + os.environ.get("LC_PRIVATE", ""), "PATH" in os.environ)
    sys.stdout.flush()
    if mode == "exit":
        sys.exit(int(sys.argv[2]))
    if mode == "crash-once" and len(open(marks).read().split()) == 1:
        sys.exit(int(sys.argv[2]))  # the first start crashes, later ones keep running
    if mode == "spam":
        for i in range(2000):
            print("x" * 100)
        sys.exit(0)
    if mode == "wait-file":
        while not os.path.exists(sys.argv[2]):
            time.sleep(0.02)
        sys.exit(0)
    if mode == "tree":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # forces the SIGKILL escalation
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open(sys.argv[2], "w") as f:
            f.write(f"{os.getpid()} {child.pid}")
    while True:
        time.sleep(0.05)
    """
)
OWNER = WorkerOwner(
    api_version="sedna.io/v1alpha1",
    kind="JointInferenceService",
    name="ji",
    namespace="default",
    uid="owner-uid",
)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "worker.py"
    path.write_text(SCRIPT)
    return path


def make_worker(
    script: Path,
    *args: str,
    name: str = "w1",
    policy: str = "OnFailure",
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
) -> ResourceObject:
    spec = WorkerSpec(
        owner=OWNER,
        worker_type="edge",
        node_name="edge-1",
        command=[sys.executable] if command is None else command,
        args=[str(script), *args],
        env=[EnvVar(name=k, value=v) for k, v in {"WORKER_NAME": name, **(env or {})}.items()],
        restart_policy=policy,  # type: ignore[arg-type]
    )
    return ResourceObject(
        kind="Worker",
        api_version=WORKER_API_VERSION,
        name=name,
        namespace="default",
        spec=spec.model_dump(by_alias=True, mode="json"),
    )


def new_runtime(sink: Any, tmp_path: Path, **kwargs: Any) -> ProcessRuntime:
    kwargs.setdefault("backoff", BackoffPolicy(initial=0.05, maximum=0.2))
    kwargs.setdefault("stop_grace", 1.0)
    kwargs.setdefault("poll_interval", 0.05)
    return ProcessRuntime(sink, tmp_path / "data", **kwargs)


@pytest.fixture
async def runtime(sink: Any, tmp_path: Path) -> AsyncIterator[ProcessRuntime]:
    rt = new_runtime(sink, tmp_path)
    yield rt
    await rt.close(stop_workers=True)


def states(sink: Any) -> list[Any]:
    return [r.worker_state for r in sink.of("worker_state")]


def phases(sink: Any) -> list[int]:
    return [s.phase for s in states(sink)]


KEY = ObjectKey("Worker", "default", "w1")


def starts(marks: Path) -> int:
    """How many times the worker started (each start appends its pid)."""
    return len(marks.read_text().split()) if marks.exists() else 0


async def test_exit_zero_succeeds_with_logs_and_minimal_env(
    runtime: ProcessRuntime,
    sink: Any,
    script: Path,
    eventually: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LC_PRIVATE", "secret")
    runtime.base_env = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    obj = make_worker(script, "exit", "0", env={"FOO": "bar"})
    await runtime.apply(obj, {"ACCESS_KEY_ID": "ak"})
    await eventually(lambda: P.WORKER_PHASE_SUCCEEDED in phases(sink), what="Succeeded")
    assert phases(sink) == [P.WORKER_PHASE_RUNNING, P.WORKER_PHASE_SUCCEEDED]
    final = sink.reports[-1]
    assert final.owner.kind == "JointInferenceService"
    assert final.owner.name == "ji"
    assert final.worker_state.worker_name == "w1"
    assert final.worker_state.exit_code == 0
    log = runtime.log_path("default", "w1").read_text()
    assert "hello from w1 FOO=bar" in log
    assert "LEAK= True" in log  # the LC's own variables do not leak; PATH does
    assert (runtime.work_dir("default", "w1")).is_dir()
    # Same spec again: nothing happens (no rerun of a finished worker).
    await runtime.apply(obj, {"ACCESS_KEY_ID": "ak"})
    assert len(states(sink)) == 2
    [view] = runtime.list_workers()
    assert view.phase.value == "Succeeded"
    assert view.pid == 0


async def test_on_failure_restarts_with_backoff(
    runtime: ProcessRuntime, sink: Any, script: Path, eventually: Any
) -> None:
    await runtime.apply(make_worker(script, "exit", "1"), {})
    await eventually(lambda: any(s.restart_count >= 3 for s in states(sink)), what="three restarts")
    pending = [s for s in states(sink) if s.phase == P.WORKER_PHASE_PENDING]
    assert pending[0].exit_code == 1
    assert "exited with code 1; back-off: restarting in 0.05s" in pending[0].message
    assert "restarting in 0.1s" in pending[1].message  # doubled
    assert P.WORKER_PHASE_FAILED not in phases(sink)  # not terminal while it restarts
    counts = [s.restart_count for s in states(sink) if s.phase == P.WORKER_PHASE_RUNNING]
    assert counts[:3] == [0, 1, 2]
    await runtime.remove(KEY)
    assert runtime.list_workers() == []


async def test_last_termination_is_kept_while_it_runs_again(
    sink: Any, script: Path, tmp_path: Path, eventually: Any
) -> None:
    marks = tmp_path / "marks"
    obj = make_worker(script, "crash-once", "3", env={"MARKS": str(marks)})
    first = new_runtime(sink, tmp_path)
    await first.apply(obj, {})

    def running_again() -> bool:
        [view] = first.list_workers()
        return starts(marks) == 2 and view.phase.value == "Running" and view.pid != 0

    await eventually(running_again, what="running again after the crash")
    [view] = first.list_workers()
    assert (view.exit_code, view.restart_count) == (0, 1)  # the current state: running
    assert view.last_exit_code == 3  # how it last ended is not lost
    assert view.last_termination_reason == "exited with code 3"
    # ... and goes to the GM with the Running report (a crash-looping worker's real exit code)
    running = [s for s in states(sink) if s.phase == P.WORKER_PHASE_RUNNING]
    assert [(s.exit_code, s.last_exit_code) for s in running] == [(0, 0), (0, 3)]
    assert running[-1].last_termination_reason == "exited with code 3"
    await first.close()  # an LC restart keeps it too (the worker is adopted)

    second = new_runtime(sink, tmp_path)
    try:
        await second.apply(obj, {})
        [view] = second.list_workers()
        assert (view.phase.value, view.last_exit_code) == ("Running", 3)
        assert view.last_termination_reason == "exited with code 3"
    finally:
        await second.close(stop_workers=True)


async def test_never_fails_and_no_command_fails(
    runtime: ProcessRuntime, sink: Any, script: Path, eventually: Any
) -> None:
    await runtime.apply(make_worker(script, "exit", "3", policy="Never"), {})
    await eventually(lambda: P.WORKER_PHASE_FAILED in phases(sink), what="Failed")
    failed = states(sink)[-1]
    assert failed.exit_code == 3
    assert failed.restart_count == 0
    assert failed.message == "exited with code 3"

    await runtime.apply(make_worker(script, name="nocmd", command=[]), {})
    last = states(sink)[-1]
    assert last.worker_name == "nocmd"
    assert last.phase == P.WORKER_PHASE_FAILED
    assert last.message == NO_COMMAND_MESSAGE

    await runtime.apply(
        make_worker(script, name="missing", command=["no-such-binary-xyz"], policy="Never"), {}
    )
    await eventually(lambda: states(sink)[-1].worker_name == "missing", what="missing")
    assert "command 'no-such-binary-xyz' not found in PATH" in states(sink)[-1].message


async def test_remove_kills_the_process_group(
    runtime: ProcessRuntime, sink: Any, script: Path, tmp_path: Path, eventually: Any
) -> None:
    pids_file = tmp_path / "pids"
    await runtime.apply(make_worker(script, "tree", str(pids_file)), {})
    await eventually(lambda: pids_file.exists() and pids_file.read_text(), what="pids")
    worker_pid, child_pid = map(int, pids_file.read_text().split())
    [view] = runtime.list_workers()
    starts = {p: process_start_time(p) for p in (view.pid, worker_pid, child_pid)}
    assert all(starts.values())
    await runtime.remove(KEY)  # SIGTERM is ignored by the worker: SIGKILL after the grace
    for pid, start in starts.items():
        assert start is not None
        await eventually(lambda p=pid, s=start: not is_alive(p, s), within=5, what=f"{pid}")
    assert not runtime.state_path("default", "w1").exists()
    await runtime.remove(KEY)  # idempotent


async def test_spec_change_restarts_and_logs_follow(
    runtime: ProcessRuntime, sink: Any, script: Path, tmp_path: Path, eventually: Any
) -> None:
    marks = tmp_path / "marks"
    await runtime.apply(make_worker(script, "sleep", env={"MARKS": str(marks)}), {})
    await eventually(lambda: starts(marks) == 1, what="running")
    first_pid = runtime.list_workers()[0].pid
    await runtime.apply(make_worker(script, "sleep", env={"MARKS": str(marks)}), {})
    assert runtime.list_workers()[0].pid == first_pid  # unchanged spec: untouched
    await runtime.apply(make_worker(script, "sleep", env={"MARKS": str(marks), "FOO": "2"}), {})
    await eventually(lambda: runtime.list_workers()[0].pid not in (0, first_pid), what="new pid")
    await eventually(lambda: starts(marks) == 2, what="second start")

    # Logs: the whole log, the tail, and follow until the worker ends.
    chunks = [c async for c in runtime.read_logs("default", "w1")]
    text = b"".join(chunks).decode()
    assert text.count("hello from w1") == 2
    assert "FOO=2" in text
    tail = b"".join([c async for c in runtime.read_logs("default", "w1", tail_lines=2)])
    assert tail.decode().splitlines() == text.splitlines()[-2:]

    got: list[bytes] = []

    async def follow() -> None:
        async for chunk in runtime.read_logs("default", "w1", follow=True):
            got.append(chunk)

    import asyncio

    task = asyncio.create_task(follow())
    await eventually(lambda: b"FOO=2" in b"".join(got), what="followed output")
    await runtime.remove(KEY)
    await asyncio.wait_for(task, timeout=5)  # the stream ends with the worker


async def test_log_is_size_capped(sink: Any, script: Path, tmp_path: Path, eventually: Any) -> None:
    rt = new_runtime(sink, tmp_path, max_log_bytes=20_000)
    try:
        await rt.apply(make_worker(script, "spam", policy="Never"), {})
        await eventually(lambda: P.WORKER_PHASE_SUCCEEDED in phases(sink), what="done")
        log = rt.log_path("default", "w1")
        assert log.with_name("w1.log.1").stat().st_size > 20_000
        assert log.stat().st_size <= 20_000
    finally:
        await rt.close(stop_workers=True)


async def test_adopts_a_running_worker_after_restart(
    sink: Any, script: Path, tmp_path: Path, eventually: Any
) -> None:
    marks = tmp_path / "marks"
    obj = make_worker(script, "sleep", env={"MARKS": str(marks)})
    first = new_runtime(sink, tmp_path)
    await first.apply(obj, {})
    await eventually(lambda: starts(marks) == 1, what="running")
    pid = first.list_workers()[0].pid
    await first.close()  # an LC shutdown leaves the worker running

    second = new_runtime(sink, tmp_path)
    try:
        await second.apply(obj, {})
        [view] = second.list_workers()
        assert view.pid == pid
        assert view.phase.value == "Running"
        assert starts(marks) == 1  # no duplicate started
        start = process_start_time(pid)
        assert start is not None
        await second.remove(KEY)
        await eventually(lambda: not is_alive(pid, start), within=5, what="adopted worker killed")
    finally:
        await second.close(stop_workers=True)


async def test_worker_that_ended_while_lc_was_down(
    sink: Any, script: Path, tmp_path: Path, eventually: Any
) -> None:
    marks, flag = tmp_path / "marks", tmp_path / "flag"
    obj = make_worker(script, "wait-file", str(flag), env={"MARKS": str(marks)})
    first = new_runtime(sink, tmp_path)
    await first.apply(obj, {})
    await eventually(lambda: first.list_workers()[0].pid, what="running")
    pid = first.list_workers()[0].pid
    start = process_start_time(pid)
    await first.close()
    flag.write_text("go")
    assert start is not None
    await eventually(lambda: not is_alive(pid, start), within=5, what="worker exit")

    second = new_runtime(sink, tmp_path)
    try:
        await second.apply(obj, {})
        await eventually(lambda: P.WORKER_PHASE_SUCCEEDED in phases(sink), what="Succeeded")
        assert starts(marks) == 1  # not started again
        await second.close()
        third = new_runtime(sink, tmp_path)  # a finished worker is not rerun either
        await third.apply(obj, {})
        assert third.list_workers()[0].phase.value == "Succeeded"
        assert starts(marks) == 1
        await third.close()
    finally:
        await second.close(stop_workers=True)


async def test_resync_stops_unlisted_workers_also_from_disk(
    sink: Any, script: Path, tmp_path: Path, eventually: Any
) -> None:
    first = new_runtime(sink, tmp_path)
    await first.apply(make_worker(script, "sleep", name="keep"), {})
    await first.apply(make_worker(script, "sleep", name="drop"), {})
    await eventually(lambda: all(v.pid for v in first.list_workers()), what="both running")
    pids = {v.name: (v.pid, process_start_time(v.pid)) for v in first.list_workers()}
    await first.close()

    second = new_runtime(sink, tmp_path)
    try:
        await second.resync([ObjectKey("Worker", "default", "keep")])
        drop_pid, drop_start = pids["drop"]
        keep_pid, keep_start = pids["keep"]
        assert drop_start is not None
        assert keep_start is not None
        assert not is_alive(drop_pid, drop_start)
        assert is_alive(keep_pid, keep_start)
        await second.resync([])
        assert not is_alive(keep_pid, keep_start)
    finally:
        await second.close(stop_workers=True)
