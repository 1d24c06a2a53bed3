"""The aggregation worker of the federated-learning example: ``sedna-aggregator`` for one job.

Upstream's ``aggregate.py`` started ``sedna.service.server.AggregationServer`` with the
``exit_round`` and participants count from its environment, and that server shut down once
the last round was aggregated and every client had gone. Here the server is the
``sedna-aggregator`` service, which serves until it is stopped. This script turns the worker's
environment (what the FederatedLearningJob controller injects plus the template's own
``env``) into its flags, runs it, and stops it the upstream way: when the job's session
(``<NAMESPACE>/<JOB_NAME>``) is COMPLETED and every trainer has left (or ``exit_grace_seconds``
after completion, for a trainer that died), exiting 0; when the session FAILED, exiting 1; when
the server itself dies, with its exit code (the LocalController restarts the worker, which
resumes from ``checkpoint_dir``). SIGTERM is passed on.

=========================  ===============================  ==============================
env                        flag                             default
=========================  ===============================  ==============================
``AGG_BIND_PORT``          ``--port``                       7363 (the controller sets it)
``AGG_BIND_IP``            ``--host``                       ``0.0.0.0`` (upstream: all)
``PARTICIPANTS_COUNT``     ``--expected-clients``           unset
``exit_round``             ``--exit-round``                 1
``aggregation_algorithm``  ``--aggregation``                ``FedAvg``
``min_participants``       ``--min-participants``           1
``round_timeout_seconds``  ``--round-timeout-seconds``      300
``checkpoint_dir``         ``--checkpoint-dir``             unset (no resume after a crash)
=========================  ===============================  ==============================

``/metrics`` gets a free port (several aggregators may share a machine).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import grpc

from sedna.api.aggregator.v1 import aggregation_service_pb2 as pb
from sedna.api.aggregator.v1 import aggregation_service_pb2_grpc as pb_grpc

__all__ = ["aggregator_command", "main"]

FLAGS = (
    ("AGG_BIND_PORT", "--port", "7363"),
    ("AGG_BIND_IP", "--host", "0.0.0.0"),  # upstream binds every interface
    ("PARTICIPANTS_COUNT", "--expected-clients", None),
    ("exit_round", "--exit-round", "1"),
    ("aggregation_algorithm", "--aggregation", "FedAvg"),
    ("min_participants", "--min-participants", "1"),
    ("round_timeout_seconds", "--round-timeout-seconds", "300"),
    ("checkpoint_dir", "--checkpoint-dir", None),
)
POLL_SECONDS = 0.5
STOP_SECONDS = 10.0


def _executable() -> str:
    """``sedna-aggregator`` next to this interpreter (workers run with the LC's PATH), else
    on PATH."""
    beside = Path(sys.executable).with_name("sedna-aggregator")
    if beside.exists():
        return str(beside)
    found = shutil.which("sedna-aggregator")
    if found is None:
        raise SystemExit("sedna-aggregator not found: install Sedna (make install)")
    return found


def aggregator_command(env: dict[str, str]) -> list[str]:
    """The ``sedna-aggregator`` command line for this environment."""
    command = [_executable(), "--metrics-port", "0"]
    for name, flag, default in FLAGS:
        value = env.get(name, "").strip() or default
        if value is not None:
            command += [flag, value]
    return command


def _state(stub: pb_grpc.AggregationServiceStub, session: str) -> tuple[str, int]:
    """The session's state name and joined-client count ("" while the server has none)."""
    try:
        reply = stub.GetSessionStatus(pb.GetSessionStatusRequest(session_id=session), timeout=5)
    except grpc.RpcError:
        return "", 0  # starting, or no trainer joined yet
    return pb.SessionState.Name(reply.state), len(reply.clients)


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main() -> int:
    """Run ``sedna-aggregator`` until the job's session is over; the exit code."""
    env = dict(os.environ)
    command = aggregator_command(env)
    session = f"{env.get('NAMESPACE', 'default')}/{env.get('JOB_NAME', '')}"
    grace = float(env.get("exit_grace_seconds", "30"))
    port = int(env.get("AGG_BIND_PORT", "7363"))
    print("starting:", " ".join(command), flush=True)
    child = subprocess.Popen(command)

    def terminate(signum: int, _frame: FrameType | None) -> None:
        _stop(child)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    completed_at: float | None = None
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.AggregationServiceStub(channel)
        while True:
            code = child.poll()
            if code is not None:
                print(f"sedna-aggregator exited with code {code}", flush=True)
                return code or 1
            state, clients = _state(stub, session)
            if state == "SESSION_STATE_FAILED":
                print(f"session {session} failed; stopping the aggregator", flush=True)
                _stop(child)
                return 1
            if state == "SESSION_STATE_COMPLETED":
                completed_at = completed_at or time.monotonic()
                if clients == 0 or time.monotonic() - completed_at > grace:
                    print(f"session {session} completed; stopping the aggregator", flush=True)
                    _stop(child)
                    return 0
            time.sleep(POLL_SECONDS)


if __name__ == "__main__":
    sys.exit(main())
