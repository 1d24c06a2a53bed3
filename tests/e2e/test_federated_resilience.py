"""Federated learning survives a dead trainer and a killed aggregator (issue 5, "done when").

Real processes on loopback: the ``sedna-aggregator`` console script and three trainers running
the example's upstream-style ``train.py`` (``FederatedLearning.train``) on the non-IID digits
splits that ``examples/federated_learning/prepare.py`` writes. A small HTTP server stands in
for the LocalController's report endpoint (``LC_SERVER``), so reports are delivered at once.

- a trainer killed (SIGKILL) mid-job does not hang the job: with ``min_participants=2`` each
  round closes at its deadline with the two others, the session completes and the survivors
  exit 0; with ``min_participants=3`` the session fails and the survivors exit non-zero with
  the failure, instead of waiting forever;
- the aggregator killed (SIGKILL) mid-job and started again on the same checkpoint directory
  resumes the session at the round after its last checkpoint, and the trainers finish the job.

Every wait has a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import grpc
import pytest

from sedna.api.aggregator.v1 import aggregation_service_pb2 as pb
from sedna.api.aggregator.v1 import aggregation_service_pb2_grpc as pb_grpc
from sedna.cli.stack import wait_healthy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "federated_learning"
NODES = ("edge-1", "edge-2", "edge-3")
SESSION = "default/resilience"
JOB_DEADLINE = 300.0
"""Seconds a step may take here: a few rounds of a tiny MLP, but three torch processes start
and train on a machine that may be busy (deadlines, not timings: nothing asserts speed)."""
ROUND_TIMEOUT = 20.0
"""Seconds a round waits for a silent trainer: every round after a trainer died costs this
much, and it must leave the live trainers (three torch processes on a busy machine) time to
train. Round 1 is the slowest (each trainer's first epoch also loads the rest of torch): 3-7 s
on a busy 2-core machine, so 20 s leaves it about three times that; later rounds take 1-2 s."""
T = TypeVar("T")


def eventually(check: Callable[[], T | None], within: float, what: str, every: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        time.sleep(every)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SEDNA_")}


@dataclass
class Hold:
    """A report the stand-in LC does not answer until released: the trainer that sent it
    waits in its report call, between pulling a round's aggregate and training the next."""

    worker: str
    round: int
    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def matches(self, body: dict[str, Any]) -> bool:
        owner = body.get("ownerInfo") or {}
        return body.get("name") == self.worker and owner.get("currentRound") == self.round

    def wait_reached(self, within: float) -> None:
        if not self.reached.wait(within):
            raise AssertionError(f"{self.worker} did not report round {self.round} in {within}s")


@dataclass
class Reports:
    """The stand-in LC: its URL, the reports received, as (monotonic time, body), and holds."""

    url: str
    received: list[tuple[float, dict[str, Any]]]
    holds: list[Hold] = field(default_factory=list)

    def hold(self, worker: str, round_number: int) -> Hold:
        """Keep ``worker`` in its report of ``round_number`` until released (or torn down):
        the next round cannot complete without it, so a job stopped there is mid-job."""
        held = Hold(worker, round_number)
        self.holds.append(held)
        return held

    def rounds_since(self, since: float) -> list[int]:
        """``currentRound`` of the trainers' round reports received after ``since``."""
        return [
            int(body["ownerInfo"]["currentRound"])
            for at, body in list(self.received)
            if at >= since and "ownerInfo" in body
        ]


class _Reports(BaseHTTPRequestHandler):
    """The LC's ``POST /sedna/workers/<name>/info``: every report is kept."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        reports: Reports = self.server.reports  # type: ignore[attr-defined]
        message = json.loads(body)
        reports.received.append((time.monotonic(), message))
        for held in reports.holds:
            if held.matches(message):
                held.reached.set()
                held.released.wait(JOB_DEADLINE)
        answer = json.dumps({"Status": 200, "Message": "OK"}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        except OSError:
            return  # the held trainer was killed meanwhile

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def lc_server() -> Iterator[Reports]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Reports)
    server.daemon_threads = True
    reports = Reports(f"http://127.0.0.1:{server.server_address[1]}", [])
    server.reports = reports  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield reports
    finally:
        for held in reports.holds:
            held.released.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's data, initial model and worker scripts (``prepare.py --out``)."""
    out = tmp_path_factory.mktemp("fl-example")
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "prepare.py"), "--out", str(out), "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=JOB_DEADLINE,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Job:
    """One federated job: the aggregator and the trainers as processes."""

    root: Path
    example: Path
    reports: Reports
    exit_round: int
    min_participants: int
    round_timeout: float
    epochs: int = 1
    below_minimum: str = "extend"
    port: int = field(default_factory=_free_port)
    aggregator: subprocess.Popen[bytes] | None = None
    trainers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def start_aggregator(self) -> None:
        argv = [
            str(Path(sys.executable).with_name("sedna-aggregator")),
            "--host=127.0.0.1",
            f"--port={self.port}",
            "--metrics-port=0",
            f"--exit-round={self.exit_round}",
            f"--min-participants={self.min_participants}",
            f"--expected-clients={len(NODES)}",
            f"--round-timeout-seconds={self.round_timeout}",
            # Round 1 waits for all three trainers, however slowly they start.
            f"--join-grace-seconds={JOB_DEADLINE}",
            f"--below-minimum={self.below_minimum}",
            f"--checkpoint-dir={self.checkpoints}",
        ]
        with self.log("aggregator").open("ab") as log:
            self.aggregator = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=_env()
            )
        wait_healthy(
            f"127.0.0.1:{self.port}",
            time.monotonic() + 60,
            lambda: self.aggregator is not None and self.aggregator.poll() is None,
        )

    def start_trainer(self, node: str) -> None:
        env = {
            **_env(),
            "AGG_IP": "127.0.0.1",
            "AGG_PORT": str(self.port),
            "NAMESPACE": "default",
            "JOB_NAME": "resilience",
            "WORKER_NAME": f"trainer-{node}",
            "LC_SERVER": self.reports.url,
            "TRAIN_DATASET_URL": str(self.example / "data" / f"{node}.csv"),
            "PRETRAINED_MODEL_URL": str(self.example / "models" / "initial.npz"),
            "BACKEND_TYPE": "TORCH",
            # One thread each: three torch processes must not oversubscribe a small machine.
            "OMP_NUM_THREADS": "1",
            "epochs": str(self.epochs),
            "output_url": str(self.root / "output"),
            "CONNECT_TIMEOUT": "60",
            "ROUND_WAIT_TIMEOUT": "120",
        }
        with self.log(node).open("ab") as log:
            self.trainers[node] = subprocess.Popen(
                [sys.executable, "train.py"],
                cwd=self.example / "workers",
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def status(self) -> pb.GetSessionStatusResponse | None:
        """The session's status (None while the aggregator is down or has no session)."""
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = pb_grpc.AggregationServiceStub(channel)
            try:
                reply: pb.GetSessionStatusResponse = stub.GetSessionStatus(
                    pb.GetSessionStatusRequest(session_id=SESSION), timeout=2
                )
            except grpc.RpcError:
                return None
        return reply

    def aggregated(self) -> int:
        """Rounds aggregated so far (-1 when the status cannot be read)."""
        reply = self.status()
        if reply is None:
            return -1
        if reply.state == pb.SESSION_STATE_COMPLETED:
            return int(reply.current_round)
        return int(reply.current_round) - 1

    def wait_aggregated(self, rounds: int) -> None:
        """Wait until ``rounds`` rounds are aggregated (fails at once if the session failed)."""

        def done() -> bool:
            status = self.status()
            if status is not None and status.state == pb.SESSION_STATE_FAILED:
                raise AssertionError(
                    f"the session failed before round {rounds} was aggregated:\n"
                    + self.tail("aggregator")
                )
            return self.aggregated() >= rounds

        eventually(done, JOB_DEADLINE, f"round {rounds} aggregated with all three trainers")

    def final_header(self) -> pb.GlobalWeightsHeader:
        """The last round's header (participants, dropped clients) of the completed session."""
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = pb_grpc.AggregationServiceStub(channel)
            request = pb.PullGlobalWeightsRequest(session_id=SESSION, client_id="test", round=0)
            for message in stub.PullGlobalWeights(request, timeout=10):
                if message.WhichOneof("part") == "header":
                    return message.header
        raise AssertionError("PullGlobalWeights sent no header")

    def checkpointed_round(self) -> int:
        manifest = self.checkpoints / f"session-{quote(SESSION, safe='')}" / "checkpoint.json"
        return int(json.loads(manifest.read_text())["round"])

    def wait_trainers(self, nodes: list[str], within: float) -> dict[str, int]:
        """Wait for the trainers of ``nodes`` to exit; their exit codes."""
        deadline = time.monotonic() + within
        codes: dict[str, int] = {}
        for node in nodes:
            try:
                codes[node] = self.trainers[node].wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"trainer {node} still runs after {within}s (the job hangs):\n"
                    + self.tail(node)
                    + "\naggregator:\n"
                    + self.tail("aggregator")
                ) from None
        return codes

    def tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join(self.log(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        for process in [*self.trainers.values(), self.aggregator]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*self.trainers.values(), self.aggregator]:
            if process is not None and process.poll() is None:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture
def make_job(tmp_path: Path, example: Path, lc_server: Reports) -> Iterator[Callable[..., Job]]:
    jobs: list[Job] = []

    def make(**kwargs: Any) -> Job:
        job = Job(root=tmp_path / f"job-{len(jobs)}", example=example, reports=lc_server, **kwargs)
        job.root.mkdir(parents=True)
        jobs.append(job)
        return job

    try:
        yield make
    finally:
        for job in jobs:
            job.stop()


def _kill(process: subprocess.Popen[bytes]) -> None:
    assert process.poll() is None, "the process ended before it could be killed mid-job"
    process.send_signal(signal.SIGKILL)
    process.wait(30)


def test_a_killed_trainer_costs_its_rounds_a_deadline_and_the_job_finishes(
    make_job: Callable[..., Job],
) -> None:
    # Killed after round 1, the trainer costs round 2 its deadline; the job ends there.
    job = make_job(exit_round=2, min_participants=2, round_timeout=ROUND_TIMEOUT)
    victim = "edge-3"
    # The victim is held in its round-1 report: round 2 cannot close without it (or its
    # deadline), so the kill lands mid-job however fast the machine trains.
    held = job.reports.hold(f"trainer-{victim}", 1)
    job.start_aggregator()
    for node in NODES:
        job.start_trainer(node)
    held.wait_reached(JOB_DEADLINE)
    _kill(job.trainers[victim])
    held.released.set()
    killed_after = job.checkpointed_round()
    assert killed_after < job.exit_round, "the job finished before the kill"

    codes = job.wait_trainers(["edge-1", "edge-2"], JOB_DEADLINE)
    assert codes == {"edge-1": 0, "edge-2": 0}, job.tail("edge-1") + job.tail("edge-2")
    status = job.status()
    assert status is not None
    assert status.state == pb.SESSION_STATE_COMPLETED
    assert status.current_round == job.exit_round
    header = job.final_header()
    assert header.round == job.exit_round
    assert sorted(header.participants) == ["trainer-edge-1", "trainer-edge-2"]
    assert list(header.dropped_clients) == [f"trainer-{victim}"]


def test_a_killed_trainer_below_the_minimum_fails_the_job_clearly(
    make_job: Callable[..., Job],
) -> None:
    job = make_job(
        exit_round=20, min_participants=3, round_timeout=ROUND_TIMEOUT, below_minimum="fail"
    )
    held = job.reports.hold("trainer-edge-3", 1)
    job.start_aggregator()
    for node in NODES:
        job.start_trainer(node)
    held.wait_reached(JOB_DEADLINE)
    _kill(job.trainers["edge-3"])
    held.released.set()

    codes = job.wait_trainers(["edge-1", "edge-2"], JOB_DEADLINE)
    for node in ("edge-1", "edge-2"):
        assert codes[node] != 0, job.tail(node)
        assert "SessionFailedError" in job.tail(node, 60), job.tail(node, 60)
    status = job.status()
    assert status is not None
    assert status.state == pb.SESSION_STATE_FAILED


def test_a_killed_aggregator_restarted_on_its_checkpoints_resumes_the_job(
    make_job: Callable[..., Job],
) -> None:
    job = make_job(exit_round=5, min_participants=3, round_timeout=JOB_DEADLINE)
    # edge-1 is held in its round-2 report: round 3 needs all three, so the aggregator is
    # killed mid-job (after round 2's checkpoint) however fast the machine trains.
    held = job.reports.hold("trainer-edge-1", 2)
    job.start_aggregator()
    for node in NODES:
        job.start_trainer(node)
    held.wait_reached(JOB_DEADLINE)
    job.wait_aggregated(2)
    assert job.aggregator is not None
    _kill(job.aggregator)
    resumed_from = job.checkpointed_round()  # the process is dead: this is final
    assert 2 <= resumed_from < job.exit_round, resumed_from
    assert all(p.poll() is None for p in job.trainers.values()), "a trainer gave up"

    restarted_at = time.monotonic()
    job.start_aggregator()
    held.released.set()
    # The restored session is at the round after its checkpoint, not back at round 1.
    first = eventually(job.status, 60, "the trainers re-joining the restarted aggregator")
    assert first.current_round >= resumed_from + 1 or first.state == pb.SESSION_STATE_COMPLETED

    codes = job.wait_trainers(list(NODES), JOB_DEADLINE)
    assert codes == dict.fromkeys(NODES, 0), "\n".join(job.tail(n) for n in NODES)
    status = job.status()
    assert status is not None
    assert status.state == pb.SESSION_STATE_COMPLETED
    assert status.current_round == job.exit_round
    # The last round had all three trainers (none was lost in the restart).
    header = job.final_header()
    assert header.round == job.exit_round
    assert sorted(header.participants) == [f"trainer-{n}" for n in NODES]
    # After the restart no trainer trained an already aggregated round again.
    after = job.reports.rounds_since(restarted_at)
    assert after, "no round was reported after the restart"
    assert min(after) >= resumed_from, after
    assert max(after) == job.exit_round, after
