"""The embedded process runtime: runs each ``Worker`` the GM assigns as a local process.

Every worker runs under ``/bin/sh`` as the leader of its own process group (so a stop reaches
everything it spawned), with stdout and stderr appended to ``<data>/logs/<ns>/<name>.log``. The
shell writes the worker's exit code to a file, and the pid with its start time goes into a
state file: a restarted LC adopts a worker that still runs instead of starting a duplicate, and
learns how one that ended meanwhile exited. Workers outlive an LC restart on purpose (as pods
outlive a kubelet restart); :meth:`ProcessRuntime.remove` stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import ValidationError

from sedna.api.common.v1 import types_pb2
from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.objects import ObjectKey, ResourceObject
from sedna.resources.wire import worker_phase_to_proto
from sedna.resources.worker import (
    WORKER_KIND,
    RestartPolicy,
    WorkerOwner,
    WorkerPhaseName,
    WorkerSpec,
)
from sedna_lc.ports import ReportSink
from sedna_lc.workers.logs import DEFAULT_MAX_LOG_BYTES, cap_log, read_log
from sedna_lc.workers.proc import is_alive, process_start_time, signal_group
from sedna_lc.workers.state import WorkerRecord, load_record, save_record

__all__ = [
    "NO_COMMAND_MESSAGE",
    "BackoffPolicy",
    "ProcessRuntime",
    "UnknownWorkerError",
    "WorkerView",
]

logger = logging.getLogger(__name__)

NO_COMMAND_MESSAGE = (
    "embedded mode needs a command in the container spec: spec.template.spec.containers[0].command"
)
BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "PYTHONPATH")
# $0 is the exit-code file, "$@" the worker's command line.
_WRAPPER = '"$@"; rc=$?; echo "$rc" > "$0"; exit "$rc"'
_TERMINAL = (WorkerPhaseName.SUCCEEDED.value, WorkerPhaseName.FAILED.value)


class UnknownWorkerError(LookupError):
    """No worker (and no log) with that namespace and name on this node."""


@dataclass(frozen=True)
class BackoffPolicy:
    """Crash-loop back-off: ``initial`` seconds doubling up to ``maximum``.

    The delay starts over once a run lasted ``reset_after`` seconds (as the kubelet does).
    """

    initial: float = 1.0
    maximum: float = 60.0
    reset_after: float = 600.0


@dataclass(frozen=True)
class WorkerView:
    """A worker as ``ListWorkers`` shows it.

    ``exit_code`` belongs to the current state (0 while it runs); ``last_exit_code`` and
    ``last_termination_reason`` say how its process last ended, so a crash-looping worker's
    real exit code is still there once it runs again (Kubernetes' ``lastState.terminated``).
    """

    namespace: str
    name: str
    owner: WorkerOwner | None
    phase: WorkerPhaseName
    pid: int
    exit_code: int
    restart_count: int
    start_time: datetime | None
    message: str
    last_exit_code: int = 0
    last_termination_reason: str = ""


def spec_hash(spec: Mapping[str, object], credentials: Mapping[str, str]) -> str:
    """Identity of what a worker runs: its spec and its credentials."""
    payload = json.dumps(
        {"spec": spec, "credentials": dict(credentials)}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _timestamp(now: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(now)
    return ts


def _spec_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "spec"
    return f"invalid Worker spec: spec.{where}: {first['msg']}"


class _Supervisor:
    """Runs one worker: start, wait, restart with back-off, report, stop."""

    def __init__(
        self,
        runtime: ProcessRuntime,
        obj: ResourceObject,
        spec: WorkerSpec | None,
        env: dict[str, str],
        record: WorkerRecord,
    ) -> None:
        self.rt = runtime
        self.namespace, self.name = obj.namespace, obj.name
        self.spec = spec
        self.env = env
        self.record = record
        self.owner_ref = self._owner_ref(obj, spec)
        self.proc: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None
        self.started_wall: datetime | None = None

    @staticmethod
    def _owner_ref(obj: ResourceObject, spec: WorkerSpec | None) -> types_pb2.ObjectReference:
        if spec is not None:
            o = spec.owner
            return types_pb2.ObjectReference(
                api_version=o.api_version,
                kind=o.kind,
                namespace=o.namespace,
                name=o.name,
                uid=o.uid,
            )
        if obj.owner_references:
            ref = obj.owner_references[0]
            return types_pb2.ObjectReference(
                api_version=ref.api_version,
                kind=ref.kind,
                namespace=obj.namespace,
                name=ref.name,
                uid=ref.uid,
            )
        return types_pb2.ObjectReference(
            api_version=obj.api_version, kind=obj.kind, namespace=obj.namespace, name=obj.name
        )

    # ------------------------------------------------------------------ state

    @property
    def running(self) -> bool:
        """Whether the worker may still produce output (it runs or will restart)."""
        return self.task is not None and not self.task.done()

    def save(self) -> None:
        save_record(self.rt.state_path(self.namespace, self.name), self.record)

    async def report(self, phase: WorkerPhaseName, exit_code: int = 0, message: str = "") -> None:
        """Persist the new state and submit a ``WorkerState`` report."""
        rec = self.record
        rec.phase, rec.exit_code, rec.message = phase.value, exit_code, message
        self.save()
        now = datetime.now(UTC)
        report = hub_service_pb2.NodeReport(
            owner=self.owner_ref,
            observed_time=_timestamp(now),
            worker_state=hub_service_pb2.WorkerState(
                worker_name=self.name,
                phase=worker_phase_to_proto(phase),
                exit_code=exit_code,
                restart_count=rec.restart_count,
                message=message,
                last_exit_code=rec.last_exit_code,
                last_termination_reason=rec.last_termination_reason,
            ),
        )
        logger.info(
            "worker %s/%s: %s (exit code %d, restarts %d) %s",
            self.namespace,
            self.name,
            phase.value,
            exit_code,
            rec.restart_count,
            message,
        )
        try:
            await self.rt.sink.submit(report)
        except Exception:  # the state is on disk; the GM learns it on the next change
            logger.exception("worker %s/%s: could not submit its state", self.namespace, self.name)

    # ------------------------------------------------------------------ running

    def _resolve_command(self, cwd: Path) -> str | None:
        assert self.spec is not None
        program = self.spec.command[0]
        if "/" in program:
            path = Path(program) if Path(program).is_absolute() else cwd / program
            return None if path.is_file() else f"command {program!r} not found"
        if shutil.which(program, path=self.env.get("PATH", os.defpath)) is None:
            return f"command {program!r} not found in PATH"
        return None

    async def _start(self) -> str | None:
        """Start the process; the error message when it cannot start."""
        assert self.spec is not None
        spec = self.spec
        cwd = Path(spec.working_dir) if spec.working_dir else self.rt.work_dir(*self._key)
        if spec.working_dir and not cwd.is_dir():
            return f"workingDir {spec.working_dir!r} does not exist"
        cwd.mkdir(parents=True, exist_ok=True)
        problem = self._resolve_command(cwd)
        if problem:
            return problem
        exit_file = self.rt.exit_path(*self._key)
        exit_file.unlink(missing_ok=True)
        log_path = self.rt.log_path(*self._key)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    "/bin/sh",
                    "-c",
                    _WRAPPER,
                    str(exit_file),
                    *spec.command,
                    *spec.args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=cwd,
                    env=self.env,
                    start_new_session=True,  # its own process group, killed as a whole
                )
            except OSError as exc:
                return f"cannot start {spec.command[0]!r}: {exc}"
        self.record.pid = self.proc.pid
        self.record.start_time = process_start_time(self.proc.pid) or 0
        self.started_wall = datetime.now(UTC)
        return None

    @property
    def _key(self) -> tuple[str, str]:
        return self.namespace, self.name

    async def _wait_exit(self) -> int | None:
        """Wait for the process to end; its exit code (None when unknown)."""
        log_path = self.rt.log_path(*self._key)
        interval = self.rt.poll_interval
        if self.proc is not None:
            waiter = asyncio.ensure_future(self.proc.wait())
            try:
                while True:
                    done, _ = await asyncio.wait({waiter}, timeout=interval)
                    cap_log(log_path, self.rt.max_log_bytes)
                    if done:
                        return waiter.result()
            finally:
                waiter.cancel()
        # Adopted after an LC restart: not our child, so poll; the shell left the exit code.
        while is_alive(self.record.pid, self.record.start_time):
            cap_log(log_path, self.rt.max_log_bytes)
            await asyncio.sleep(interval)
        cap_log(log_path, self.rt.max_log_bytes)
        return self._read_exit_file()

    def _read_exit_file(self) -> int | None:
        try:
            return int(self.rt.exit_path(*self._key).read_text().strip())
        except (OSError, ValueError):
            return None

    async def run(self, *, adopt: bool, exited: bool) -> None:
        """The supervision loop (the task of this worker)."""
        policy = self.spec.restart_policy if self.spec else RestartPolicy.NEVER
        backoff = self.rt.backoff
        delay = backoff.initial
        rec = self.record
        first = True
        while True:
            started = time.monotonic()
            problem: str | None = None
            if first and exited:
                code = self._read_exit_file()
            else:
                if first and adopt:
                    logger.info("worker %s/%s: adopted pid %d", *self._key, rec.pid)
                    if rec.phase != WorkerPhaseName.RUNNING.value:
                        await self.report(WorkerPhaseName.RUNNING)
                else:
                    problem = await self._start()
                    if problem is None:
                        await self.report(WorkerPhaseName.RUNNING)
                code = 127 if problem else await self._wait_exit()
            first = False
            self.proc = None
            rec.pid, rec.start_time = 0, 0
            self.save()
            if problem is None:
                problem = f"exited with code {code}" if code is not None else "exit status unknown"
            exit_code = code if code is not None else -1
            rec.last_exit_code, rec.last_termination_reason = exit_code, problem
            if not (
                policy is RestartPolicy.ALWAYS
                or (policy is RestartPolicy.ON_FAILURE and exit_code != 0)
            ):
                phase = WorkerPhaseName.SUCCEEDED if exit_code == 0 else WorkerPhaseName.FAILED
                await self.report(phase, exit_code, problem)
                return
            if time.monotonic() - started >= backoff.reset_after:
                delay = backoff.initial
            await self.report(
                WorkerPhaseName.PENDING,
                exit_code,
                f"{problem}; back-off: restarting in {delay:g}s ({policy.value})",
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, backoff.maximum)
            rec.restart_count += 1

    async def stop(self, grace: float) -> None:
        """Stop supervising and kill the process group (SIGTERM, then SIGKILL after grace)."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await kill_group(self.record.pid, self.record.start_time, self.proc, grace)
        self.proc = None
        self.record.pid, self.record.start_time = 0, 0

    def detach(self) -> None:
        """Stop supervising but leave the process running (an LC shutdown)."""
        if self.task is not None:
            self.task.cancel()


async def kill_group(
    pid: int, start_time: int, proc: asyncio.subprocess.Process | None, grace: float
) -> None:
    """SIGTERM the process group led by ``pid``, then SIGKILL whatever is left after ``grace``."""
    if pid <= 0:
        return
    if proc is None and not is_alive(pid, start_time):
        return  # gone, or the pid now belongs to someone else

    def gone() -> bool:
        if proc is not None:
            return proc.returncode is not None
        return not is_alive(pid, start_time)

    if not signal_group(pid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    if proc is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=grace)
    else:
        while time.monotonic() < deadline:
            if gone():
                break
            await asyncio.sleep(0.05)
    # The leader may be gone while children it spawned linger in the group: kill them too.
    signal_group(pid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=5.0)


class ProcessRuntime:
    """Runs ``Worker`` objects as local processes and reports their phase changes.

    Parameters
    ----------
    sink
        Where ``WorkerState`` reports go.
    data_dir
        The LC data dir: ``logs/<ns>/<name>.log`` and ``workers/<ns>/<name>/`` (state file,
        exit code, default working dir ``work/``).
    backoff
        Crash-loop back-off between restarts.
    stop_grace
        Seconds between SIGTERM and SIGKILL when a worker is stopped.
    poll_interval
        How often adopted processes are checked and log sizes capped.
    max_log_bytes
        A log larger than this is moved to ``<name>.log.1`` and truncated.
    base_env
        The environment every worker starts from; default PATH, HOME, LANG and PYTHONPATH of
        the LC's own environment.
    """

    def __init__(
        self,
        sink: ReportSink,
        data_dir: Path,
        *,
        backoff: BackoffPolicy | None = None,
        stop_grace: float = 10.0,
        poll_interval: float = 0.5,
        max_log_bytes: int = DEFAULT_MAX_LOG_BYTES,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.sink = sink
        self.data_dir = data_dir
        self.backoff = backoff or BackoffPolicy()
        self.stop_grace = stop_grace
        self.poll_interval = poll_interval
        self.max_log_bytes = max_log_bytes
        if base_env is None:
            base_env = {k: os.environ[k] for k in BASE_ENV_KEYS if k in os.environ}
        self.base_env = dict(base_env)
        self._workers: dict[tuple[str, str], _Supervisor] = {}
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ paths

    def log_path(self, namespace: str, name: str) -> Path:
        """``<data>/logs/<namespace>/<name>.log``."""
        return self.data_dir / "logs" / namespace / f"{name}.log"

    def worker_dir(self, namespace: str, name: str) -> Path:
        """``<data>/workers/<namespace>/<name>``: state file, exit code, work dir."""
        return self.data_dir / "workers" / namespace / name

    def state_path(self, namespace: str, name: str) -> Path:
        """The worker's state file."""
        return self.worker_dir(namespace, name) / "state.json"

    def exit_path(self, namespace: str, name: str) -> Path:
        """Where the wrapper shell writes the exit code."""
        return self.worker_dir(namespace, name) / "exit_code"

    def work_dir(self, namespace: str, name: str) -> Path:
        """The default working directory."""
        return self.worker_dir(namespace, name) / "work"

    # ------------------------------------------------------------------ handler

    async def apply(self, obj: ResourceObject, credentials: Mapping[str, str]) -> None:
        """Run ``obj`` (a ``Worker``): nothing when unchanged, a restart when its spec changed."""
        key = (obj.namespace, obj.name)
        hash_ = spec_hash(obj.spec, credentials)
        async with self._lock:
            current = self._workers.get(key)
            if current is not None:
                if current.record.spec_hash == hash_:
                    return
                logger.info("worker %s/%s: spec changed, restarting it", *key)
                await current.stop(self.stop_grace)
                del self._workers[key]
            await self._launch(obj, credentials, hash_)

    async def _launch(
        self, obj: ResourceObject, credentials: Mapping[str, str], hash_: str
    ) -> None:
        key = (obj.namespace, obj.name)
        problem = ""
        spec: WorkerSpec | None = None
        try:
            spec = WorkerSpec.model_validate(obj.spec)
        except ValidationError as exc:
            problem = _spec_error(exc)
        if spec is not None and not spec.command:
            problem = NO_COMMAND_MESSAGE
        env = dict(self.base_env)
        env.update(credentials)
        if spec is not None:
            env.update(spec.env_dict())
        old = load_record(self.state_path(*key))
        adopt = exited = False
        record = WorkerRecord(namespace=obj.namespace, name=obj.name, spec_hash=hash_)
        if spec is not None:
            record.owner = spec.owner.model_dump(by_alias=True)
        if old is not None and old.spec_hash == hash_ and not problem:
            record.restart_count = old.restart_count
            record.phase, record.exit_code, record.message = old.phase, old.exit_code, old.message
            record.last_exit_code = old.last_exit_code
            record.last_termination_reason = old.last_termination_reason
            if old.pid and is_alive(old.pid, old.start_time):
                record.pid, record.start_time = old.pid, old.start_time
                adopt = True
            elif old.pid:
                exited = True  # it ended while the LC was down: the exit file says how
            elif old.phase in _TERMINAL:
                # Finished before the LC restarted: do not run it again.
                sup = _Supervisor(self, obj, spec, env, record)
                self._workers[key] = sup
                return
        elif old is not None and old.pid:
            await kill_group(old.pid, old.start_time, None, self.stop_grace)
        sup = _Supervisor(self, obj, spec, env, record)
        self._workers[key] = sup
        if problem:
            await sup.report(WorkerPhaseName.FAILED, 0, problem)
            return
        sup.save()
        sup.task = asyncio.create_task(
            sup.run(adopt=adopt, exited=exited), name=f"worker:{key[0]}/{key[1]}"
        )

    async def remove(self, key: ObjectKey) -> None:
        """Stop the worker (its whole process group) and drop its state; unknown is a no-op."""
        async with self._lock:
            await self._remove(key.namespace, key.name)

    async def _remove(self, namespace: str, name: str) -> None:
        sup = self._workers.pop((namespace, name), None)
        if sup is not None:
            await sup.stop(self.stop_grace)
        else:
            old = load_record(self.state_path(namespace, name))
            if old is not None:
                await kill_group(old.pid, old.start_time, None, self.stop_grace)
        self.state_path(namespace, name).unlink(missing_ok=True)
        self.exit_path(namespace, name).unlink(missing_ok=True)

    async def resync(self, keys: Sequence[ObjectKey]) -> None:
        """Stop every worker (running here or recorded on disk) that is not in ``keys``."""
        wanted = {(k.namespace, k.name) for k in keys if k.kind == WORKER_KIND}
        async with self._lock:
            known = set(self._workers) | set(self._recorded())
            for namespace, name in sorted(known - wanted):
                logger.info("worker %s/%s: not assigned after resync, stopping it", namespace, name)
                await self._remove(namespace, name)

    def _recorded(self) -> list[tuple[str, str]]:
        root = self.data_dir / "workers"
        return [(path.parent.parent.name, path.parent.name) for path in root.glob("*/*/state.json")]

    async def close(self, *, stop_workers: bool = False) -> None:
        """Stop supervising; with ``stop_workers`` also stop the processes (else they go on)."""
        async with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for sup in workers:
            if stop_workers:
                await sup.stop(self.stop_grace)
                sup.save()
            else:
                sup.detach()
                if sup.task is not None:
                    with contextlib.suppress(asyncio.CancelledError):
                        await sup.task

    # ------------------------------------------------------------------ queries

    def owner_of(self, namespace: str, worker_name: str) -> WorkerOwner | None:
        """The owner of a worker this node runs, or None."""
        sup = self._workers.get((namespace, worker_name))
        if sup is None:
            if namespace:
                return None
            matches = [s for (_, n), s in self._workers.items() if n == worker_name]
            if len(matches) != 1:
                return None
            sup = matches[0]
        return sup.spec.owner if sup.spec is not None else None

    def list_workers(self, namespace: str = "") -> list[WorkerView]:
        """The workers of ``namespace`` (every namespace when empty), sorted."""
        views = []
        for (ns, name), sup in sorted(self._workers.items()):
            if namespace and ns != namespace:
                continue
            rec = sup.record
            try:
                phase = WorkerPhaseName(rec.phase)
            except ValueError:
                phase = WorkerPhaseName.PENDING
            views.append(
                WorkerView(
                    namespace=ns,
                    name=name,
                    owner=sup.spec.owner if sup.spec is not None else None,
                    phase=phase,
                    pid=rec.pid,
                    exit_code=rec.exit_code,
                    restart_count=rec.restart_count,
                    start_time=sup.started_wall if rec.pid else None,
                    message=rec.message,
                    last_exit_code=rec.last_exit_code,
                    last_termination_reason=rec.last_termination_reason,
                )
            )
        return views

    def read_logs(
        self, namespace: str, name: str, *, follow: bool = False, tail_lines: int = 0
    ) -> AsyncIterator[bytes]:
        """The worker's log; with ``follow``, new output until the worker ends.

        Raises
        ------
        UnknownWorkerError
            Neither a worker nor a log with that name exists here.
        """
        path = self.log_path(namespace, name)
        key = (namespace, name)
        if key not in self._workers and not path.exists():
            raise UnknownWorkerError(f"no worker {namespace}/{name} on this node")

        def running() -> bool:
            sup = self._workers.get(key)
            return sup is not None and sup.running

        return read_log(
            path,
            follow=follow,
            tail_lines=tail_lines,
            running=running,
            poll_interval=min(self.poll_interval, 0.2),
        )
