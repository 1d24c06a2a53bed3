"""gRPC adapters: ``WorkerReportService`` and ``NodeAgentService`` of ``sedna.api.lc.v1``."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

import sedna
from sedna.api.common.v1 import types_pb2
from sedna.api.lc.v1 import worker_service_pb2 as pb
from sedna.api.lc.v1 import worker_service_pb2_grpc as pb_grpc
from sedna.resources.wire import worker_phase_to_proto
from sedna.runtime import ServiceServer
from sedna_lc.reports.intake import ReportError, WorkerReportIntake
from sedna_lc.workers import ProcessRuntime, UnknownWorkerError

__all__ = [
    "NODE_AGENT_SERVICE",
    "WORKER_REPORT_SERVICE",
    "NodeAgentServicer",
    "NodeStatus",
    "WorkerReportServicer",
    "add_lc_servicers",
]

logger = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[object, object]
WORKER_REPORT_SERVICE = "sedna.api.lc.v1.WorkerReportService"
NODE_AGENT_SERVICE = "sedna.api.lc.v1.NodeAgentService"


@dataclass(frozen=True)
class NodeStatus:
    """The link's view for ``GetNodeInfo``: whether the GM stream is up, unsent reports."""

    connected_to_gm: bool
    outbox_size: int
    resource_count: int = 0


NodeStatusFn = Callable[[], NodeStatus | Awaitable[NodeStatus]]


class WorkerReportServicer(pb_grpc.WorkerReportServiceServicer):
    """``ReportWorkerStatus`` over a :class:`WorkerReportIntake`."""

    def __init__(self, intake: WorkerReportIntake) -> None:
        self._intake = intake

    async def ReportWorkerStatus(  # noqa: N802 - gRPC method name
        self, request: pb.ReportWorkerStatusRequest, context: Context
    ) -> pb.ReportWorkerStatusResponse:
        """Store the report durably (or recognise a repeat) and answer with its id."""
        try:
            result = await self._intake.submit(request.report)
        except ReportError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"report.{exc}")
            raise  # unreachable: abort raises
        except Exception:
            logger.exception("could not store a worker report")
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the node could not store the report")
            raise
        return pb.ReportWorkerStatusResponse(report_id=result.report_id, duplicate=result.duplicate)


class NodeAgentServicer(pb_grpc.NodeAgentServiceServicer):
    """The node's own view: identity, link status, workers and their logs.

    Parameters
    ----------
    node_name
        This node.
    runtime
        The process runtime (workers and logs).
    status
        Returns the link status (sync or async); None reports "not connected".
    """

    def __init__(
        self, node_name: str, runtime: ProcessRuntime, status: NodeStatusFn | None = None
    ) -> None:
        self._node_name = node_name
        self._runtime = runtime
        self._status = status

    async def GetNodeInfo(  # noqa: N802 - gRPC method name
        self, request: pb.GetNodeInfoRequest, context: Context
    ) -> pb.GetNodeInfoResponse:
        """Name, version and link status of this node."""
        status = NodeStatus(connected_to_gm=False, outbox_size=0)
        if self._status is not None:
            value = self._status()
            status = await value if inspect.isawaitable(value) else value
        return pb.GetNodeInfoResponse(
            node_name=self._node_name,
            agent_version=sedna.__version__,
            connected_to_gm=status.connected_to_gm,
            outbox_size=max(status.outbox_size, 0),
            resource_count=max(status.resource_count, 0),
        )

    async def ListWorkers(  # noqa: N802 - gRPC method name
        self, request: pb.ListWorkersRequest, context: Context
    ) -> pb.ListWorkersResponse:
        """The workers of a namespace (all when empty)."""
        infos = []
        for view in self._runtime.list_workers(request.namespace):
            info = pb.WorkerInfo(
                name=view.name,
                namespace=view.namespace,
                phase=worker_phase_to_proto(view.phase),
                pid=view.pid,
                exit_code=view.exit_code,
                restart_count=view.restart_count,
                last_exit_code=view.last_exit_code,
                last_termination_reason=view.last_termination_reason,
            )
            if view.owner is not None:
                info.owner.CopyFrom(
                    types_pb2.ObjectReference(
                        api_version=view.owner.api_version,
                        kind=view.owner.kind,
                        namespace=view.owner.namespace,
                        name=view.owner.name,
                        uid=view.owner.uid,
                    )
                )
            if view.start_time is not None:
                ts = Timestamp()
                ts.FromDatetime(view.start_time)
                info.start_time.CopyFrom(ts)
            infos.append(info)
        return pb.ListWorkersResponse(workers=infos)

    async def StreamWorkerLogs(  # noqa: N802 - gRPC method name
        self, request: pb.StreamWorkerLogsRequest, context: Context
    ) -> AsyncIterator[pb.StreamWorkerLogsResponse]:
        """The worker's log; with follow, until the worker ends or the client cancels."""
        if not request.worker_name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "worker_name: required")
        try:
            chunks = self._runtime.read_logs(
                request.namespace,
                request.worker_name,
                follow=request.follow,
                tail_lines=request.tail_lines,
            )
        except UnknownWorkerError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            raise
        async for data in chunks:
            yield pb.StreamWorkerLogsResponse(data=data)


def add_lc_servicers(
    server: ServiceServer,
    intake: WorkerReportIntake,
    runtime: ProcessRuntime,
    node_name: str,
    status: NodeStatusFn | None = None,
) -> None:
    """Register both LC services on ``server`` (before it starts)."""
    server.add_servicer(
        pb_grpc.add_WorkerReportServiceServicer_to_server,
        WorkerReportServicer(intake),
        WORKER_REPORT_SERVICE,
    )
    server.add_servicer(
        pb_grpc.add_NodeAgentServiceServicer_to_server,
        NodeAgentServicer(node_name, runtime, status),
        NODE_AGENT_SERVICE,
    )
