"""What ``sedna demo`` asks the running stack: a service's status, its workers and their logs.

Workers are found on each node's LocalController (``NodeAgentService.ListWorkers``), logs are
read from there too (``StreamWorkerLogs``), and the service's status comes from the
GlobalManager's resource API, as ``sedna get``/``sedna logs`` do. Every call has a deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from sedna.api.common.v1 import types_pb2
from sedna.api.gm.v1 import resource_service_pb2 as rpb
from sedna.api.lc.v1 import worker_service_pb2 as wpb
from sedna.cli.client import Connection
from sedna.resources.wire import resource_from_proto

__all__ = [
    "CRASH_LOOP_RESTARTS",
    "WorkerState",
    "condition",
    "find_workers",
    "log_tail",
    "metric_values",
    "service_object",
    "worker_problem",
]

CRASH_LOOP_RESTARTS = 2
"""A worker restarted this often is failing, not starting."""

_PHASES = {
    types_pb2.WORKER_PHASE_PENDING: "Pending",
    types_pb2.WORKER_PHASE_RUNNING: "Running",
    types_pb2.WORKER_PHASE_SUCCEEDED: "Succeeded",
    types_pb2.WORKER_PHASE_FAILED: "Failed",
}


@dataclass(frozen=True)
class WorkerState:
    """One worker of the service on one node.

    Attributes
    ----------
    node
        The node (its LocalController) running it.
    agent
        That LocalController's gRPC address (for its logs).
    name, namespace
        The worker.
    phase
        ``Pending``, ``Running``, ``Succeeded``, ``Failed`` (``Unknown`` otherwise).
    exit_code, restart_count
        As the LocalController reports them (``exit_code`` is 0 while it runs again).
    last_exit_code, last_termination_reason
        How its process last ended (``exited with code 3``); 0 and "" until it first ends.
    """

    node: str
    agent: str
    name: str
    namespace: str
    phase: str
    exit_code: int
    restart_count: int
    last_exit_code: int = 0
    last_termination_reason: str = ""


def find_workers(
    conn: Connection, agents: dict[str, str], owner_kind: str, owner_name: str
) -> list[WorkerState]:
    """The workers of ``owner_kind/owner_name`` on every node of ``agents`` (node → address).

    A LocalController that does not answer contributes nothing (it may be restarting).
    """
    found: list[WorkerState] = []
    for node, address in agents.items():
        try:
            reply = conn.node_agent(address).ListWorkers(wpb.ListWorkersRequest())
        except grpc.RpcError:
            continue
        for info in reply.workers:
            if info.owner.kind != owner_kind or info.owner.name != owner_name:
                continue
            found.append(
                WorkerState(
                    node=node,
                    agent=address,
                    name=info.name,
                    namespace=info.namespace,
                    phase=_PHASES.get(info.phase, "Unknown"),
                    exit_code=info.exit_code,
                    restart_count=info.restart_count,
                    last_exit_code=info.last_exit_code,
                    last_termination_reason=info.last_termination_reason,
                )
            )
    return found


def worker_problem(worker: WorkerState) -> str | None:
    """Why ``worker`` is failing (None while it runs or starts normally)."""
    if worker.phase == "Failed":
        return f"worker {worker.name} on node {worker.node} failed (exit code {worker.exit_code})"
    if worker.phase == "Succeeded":
        return f"worker {worker.name} on node {worker.node} exited (exit code 0)"
    if worker.restart_count >= CRASH_LOOP_RESTARTS:
        if worker.last_termination_reason:
            code = f"{worker.last_termination_reason}, "
        else:
            code = f"exit code {worker.exit_code}, " if worker.exit_code else ""
        return (
            f"worker {worker.name} on node {worker.node} keeps exiting ({code}restarted "
            f"{worker.restart_count} times)"
        )
    return None


def log_tail(conn: Connection, worker: WorkerState, lines: int = 20) -> str:
    """The last ``lines`` lines of the worker's output (a note when it cannot be read)."""
    request = wpb.StreamWorkerLogsRequest(
        namespace=worker.namespace, worker_name=worker.name, follow=False, tail_lines=lines
    )
    try:
        chunks = [c.data for c in conn.node_agent(worker.agent).StreamWorkerLogs(request)]
    except grpc.RpcError as exc:
        return (
            f"(cannot read the log from the LocalController at {worker.agent}: {exc.code().name})"
        )
    text = b"".join(chunks).decode(errors="replace").rstrip()
    return text or "(no output)"


def service_object(conn: Connection, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The object as ``sedna get -o json`` shows it; None when it is missing or unreachable."""
    try:
        reply = conn.resources().Get(rpb.GetRequest(kind=kind, namespace=namespace, name=name))
    except grpc.RpcError:
        return None
    data: dict[str, Any] = resource_from_proto(reply.resource).to_dict()
    return data


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    """The status condition of type ``kind`` (None when absent)."""
    status = (obj or {}).get("status") or {}
    for item in status.get("conditions") or []:
        if isinstance(item, dict) and item.get("type") == kind:
            return item
    return None


def metric_values(obj: dict[str, Any] | None) -> dict[str, str]:
    """``status.metrics`` as key → value."""
    status = (obj or {}).get("status") or {}
    return {
        str(m.get("key")): str(m.get("value"))
        for m in status.get("metrics") or []
        if isinstance(m, dict) and "key" in m
    }
