"""Worker reports into the LocalController: gRPC services and the upstream HTTP route."""

from sedna_lc.reports.grpc_service import (
    NODE_AGENT_SERVICE,
    WORKER_REPORT_SERVICE,
    NodeAgentServicer,
    NodeStatus,
    WorkerReportServicer,
    add_lc_servicers,
)
from sedna_lc.reports.http_api import (
    DEFAULT_MAX_BODY_BYTES,
    HttpReportServer,
    build_app,
    parse_report,
)
from sedna_lc.reports.intake import OwnerLookup, ReportError, SubmitResult, WorkerReportIntake

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "NODE_AGENT_SERVICE",
    "WORKER_REPORT_SERVICE",
    "HttpReportServer",
    "NodeAgentServicer",
    "NodeStatus",
    "OwnerLookup",
    "ReportError",
    "SubmitResult",
    "WorkerReportIntake",
    "WorkerReportServicer",
    "add_lc_servicers",
    "build_app",
    "parse_report",
]
